"""The shared objects kept in Redis: a ``Backend`` (``_channel.RedisChannel``) that the
proxies use unchanged when their address is a ``redis://`` URL. See docs/redis.md."""
