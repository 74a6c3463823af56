"""The embedded API: `grid.Node`, a member inside your process, and its maps served from
the local store without a network hop."""
