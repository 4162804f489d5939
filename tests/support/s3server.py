"""A real S3-compatible server for tests: SeaweedFS `weed mini`, started by the same code as
`capsearch deps up` (capsearch/deps/s3.py), on free loopback ports with authentication on."""

from capsearch.deps.s3 import S3Server, start_s3_server, weed_binary

__all__ = ["S3Server", "start_s3_server", "weed_binary"]
