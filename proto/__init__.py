"""The wire contracts (`.proto`) and their generated modules."""
