"""Data: the sample world generator, image handling, shard writing and reading."""
