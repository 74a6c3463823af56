"""The client SDK: grid.Client (sync) and grid.AsyncClient (asyncio)."""
