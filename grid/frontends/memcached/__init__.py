"""The memcached front end: the text and meta protocols of memcached 1.6 (docs/memcached.md)."""
