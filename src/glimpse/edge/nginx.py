"""The nginx configuration of the edge in front of `glimpse serve`: a pure function of the
options given on the command line and the settings.

What the edge does, and why:

- It terminates TLS (when given a certificate and key), holds slow clients off the API (header
  and body timeouts, a cap on connections per client address, request bodies buffered to disk
  before the API sees them) and passes everything to the origin with the headers the API trusts
  behind `GLIMPSE_TRUSTED_PROXY_HOPS=1`: X-Forwarded-For (the client's address appended),
  X-Forwarded-Proto and nginx's own X-Request-ID (a client's is replaced, never trusted).
- `/media/` goes through nginx's cache. Public variants are kept for the time the origin names
  in X-Accel-Expires (`GLIMPSE_EDGE_CACHE_SECONDS`; nginx obeys it before Cache-Control and does
  not pass it on, so browsers still get `immutable`). When that time is up nginx asks the origin
  again with the ETag it holds: a 304 (no bytes) while the post may still be shown, a 404 once it
  is deleted or private. That is the bound on how long the edge serves media it should not: the
  edge validity plus the origin's own `GLIMPSE_ORIGIN_CACHE_TTL_SECONDS`. Open-source nginx has
  no purge, so the bound is kept by a short validity and cheap revalidation rather than by a
  message from the origin.
- Private media is never cached: its signed URLs carry a query string, which bypasses the cache
  both ways, and the origin marks private answers `private, no-cache` (and its 404s `no-store`),
  which nginx does not store either. The cache key is the path alone, so no query string can
  make a second copy of a public file.
- Ranges and conditional requests of a cached file are answered by nginx from the cache (the
  whole file is fetched once: nginx asks the origin for all of it, and cuts a first request's
  range from it as it arrives, as the origin says `Accept-Ranges: bytes`); If-None-Match against
  the cached ETag gets a 304.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from glimpse.config import Settings

# What a path may hold to be written into the configuration unquoted by accident: nginx
# strings end at a quote, and `$` starts a variable.
_UNSAFE_IN_PATH = re.compile(r'["\'$;{}\\\s]')
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_SIZE = re.compile(r"^\d+[kmgKMG]?$")
# Retry-After of the edge's own 503s (the origin unreachable, too many connections).
RETRY_AFTER_SECONDS = 5
# Cache files whose descriptors a worker keeps open (open_file_cache).
OPEN_FILES_KEPT = 4096


class EdgeConfigError(ValueError):
    """Options that cannot make a working configuration; the message says which."""


@dataclass(frozen=True)
class EdgeOptions:
    listen: str  # HOST:PORT
    upstream: str  # http://HOST:PORT of `glimpse serve`
    cache_dir: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    worker_processes: str = "auto"
    cache_max_size: str = "10g"
    # Who the worker processes run as when nginx starts as root (nginx's default: nobody); they
    # write the cache and temporary files, so the cache folder must be theirs to write.
    user: str | None = None


def _path(path: Path, what: str) -> str:
    text = str(path.resolve())
    if _UNSAFE_IN_PATH.search(text):
        raise EdgeConfigError(f"the {what} path may not hold quotes, spaces, `$`, `;` or braces")
    return text


def _upstream(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise EdgeConfigError("--upstream must look like http://HOST:PORT (glimpse serve)")
    if parts.query or parts.fragment or parts.username:
        raise EdgeConfigError("--upstream must look like http://HOST:PORT (glimpse serve)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


def _listen(listen: str) -> str:
    match = _LISTEN.match(listen)
    if not match or not 0 < int(match.group(2)) <= 65535:
        raise EdgeConfigError("--listen must look like HOST:PORT")
    return listen


def max_body_bytes(settings: Settings) -> int:
    """The largest request body the API takes: a post of the most photos, or a video, and the
    multipart framing around them."""
    largest = max(settings.max_files_per_post * settings.max_image_bytes, settings.max_video_bytes)
    return largest + 1024 * 1024


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def _error(status: int, code: str, message: str, retry_after: bool) -> str:
    retry = f"        add_header Retry-After {RETRY_AFTER_SECONDS} always;\n" if retry_after else ""
    body = f'{{"error": {{"code": "{code}", "message": "{message}"}}}}'
    return (
        "        default_type application/json;\n"
        f"{retry}"
        "        add_header X-Content-Type-Options nosniff always;\n"
        "        add_header X-Request-ID $request_id always;\n"
        "        add_header Cache-Control no-store always;\n"
        f"        return {status} '{body}';\n"
    )


# nginx's own refusals of what is not HTTP it will pass on (a request line or header it cannot
# parse, two Content-Lengths, Transfer-Encoding beside Content-Length or one it does not know,
# a URL or headers past large_client_header_buffers), answered in the API's error shape rather
# than nginx's HTML page. These are pages at a path, not named locations: nginx refuses to
# redirect to a named location a request whose line it could not read (and answered 500).
# 501 (an unknown transfer coding) and 505 (an HTTP version) are the client's mistakes: 400.
_REFUSALS = (
    ("400 501 505", 400, "bad-request", "bad_request", "The request is not valid HTTP."),
    ("414", 414, "uri-too-long", "uri_too_long", "The URL is too long."),
    ("494", 431, "headers-too-large", "headers_too_large", "The request headers are too large."),
)
_REFUSAL_PATH = "/.glimpse-edge/"


def _refusals() -> tuple[str, str]:
    """The error_page lines and the internal locations that answer them."""
    pages, locations = [], []
    for nginx_codes, status, name, code, message in _REFUSALS:
        pages.append(f"        error_page {nginx_codes} ={status} {_REFUSAL_PATH}{name};\n")
        locations.append(
            f"        location = {_REFUSAL_PATH}{name} {{\n"
            "            internal;\n"
            f"{_error(status, code, message, False)}"
            "        }\n"
        )
    return "".join(pages), "".join(locations)


def nginx_config(options: EdgeOptions, settings: Settings) -> str:
    """The whole nginx.conf, to run as `nginx -c FILE -g 'daemon off;'`."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise EdgeConfigError("--tls-cert and --tls-key go together")
    if options.worker_processes != "auto" and not options.worker_processes.isdigit():
        raise EdgeConfigError("--worker-processes must be a number or `auto`")
    if not _SIZE.match(options.cache_max_size):
        raise EdgeConfigError("--cache-max-size must be a size such as 10g")
    cache = _path(options.cache_dir, "cache")
    user = ""
    if options.user is not None:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", options.user):
            raise EdgeConfigError("--user must be a user name")
        user = f"user {options.user};\n"
    listen = _listen(options.listen)
    upstream = _upstream(options.upstream)
    tls = ""
    listen_line = f"listen {listen};"
    if options.tls_cert is not None and options.tls_key is not None:
        listen_line = f"listen {listen} ssl http2;"
        tls = (
            f'        ssl_certificate "{_path(options.tls_cert, "certificate")}";\n'
            f'        ssl_certificate_key "{_path(options.tls_key, "key")}";\n'
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_session_cache shared:glimpse_tls:10m;\n"
            "        ssl_session_timeout 1d;\n"
        )
    refusal_pages, refusal_locations = _refusals()
    per_client = settings.max_connections_per_client
    limit_conn = f"        limit_conn glimpse_per_client {per_client};\n" if per_client else ""
    return f"""\
# nginx edge for Glimpse, made by `glimpse edge-config` (glimpse/edge/nginx.py says why each
# part is there). Run: nginx -c THIS_FILE -g 'daemon off;'
# The origin behind it: GLIMPSE_TRUSTED_PROXY_HOPS=1 glimpse serve ...
{user}worker_processes {options.worker_processes};
worker_rlimit_nofile 16384;
pid "{cache}/nginx.pid";
error_log "{cache}/error.log" warn;

events {{
    worker_connections 4096;
}}

http {{
    types {{
        text/html html;
        application/json json;
        image/jpeg jpg;
        image/webp webp;
        image/avif avif;
        video/mp4 mp4;
    }}
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    # Off (nginx's default): with it on, answers from the cache on kept-alive connections
    # stalled on delayed ACKs, 1.1k requests/s against 13-19k without (bench/bench_edge.py).
    tcp_nopush off;
    keepalive_timeout 65s;
    keepalive_requests 10000;

    # Everything nginx writes lives under the cache folder.
    client_body_temp_path "{cache}/client_body";
    proxy_temp_path "{cache}/proxy";
    fastcgi_temp_path "{cache}/fastcgi";
    uwsgi_temp_path "{cache}/uwsgi";
    scgi_temp_path "{cache}/scgi";
    # The path, never the query string: a private media URL's signature has no place in a log.
    log_format glimpse '$remote_addr [$time_iso8601] "$request_method $uri" $status '
                       '$body_bytes_sent $request_time cache=$upstream_cache_status '
                       'id=$request_id';
    access_log "{cache}/access.log" glimpse buffer=64k flush=1s;

    # Slow clients wait on nginx, not on the API: headers must arrive within the API's own
    # header deadline, a body may not stall for longer than an upload may, and bodies are
    # buffered here before the API reads them.
    client_header_timeout {_seconds(settings.header_timeout_seconds)};
    client_body_timeout {_seconds(settings.upload_idle_timeout_seconds)};
    send_timeout 60s;
    client_max_body_size {max_body_bytes(settings)};
    large_client_header_buffers 4 16k;
    limit_conn_zone $binary_remote_addr zone=glimpse_per_client:10m;
    limit_conn_status 503;

    proxy_cache_path "{cache}/media" levels=1:2 keys_zone=glimpse_media:16m
                     max_size={options.cache_max_size} inactive=7d use_temp_path=off;

    upstream glimpse_origin {{
        server {upstream};
        keepalive 64;
    }}

    server {{
        {listen_line}
{tls}{limit_conn}
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;
        proxy_read_timeout 120s;

        # nginx's own refusals in the API's error shape.
        error_page 502 504 = @unavailable;
        error_page 503 = @busy;
        error_page 413 = @too_large;
        error_page 408 = @timeout;
{refusal_pages}
        location / {{
            proxy_pass http://glimpse_origin;
        }}

        location /media/ {{
            proxy_pass http://glimpse_origin;
            proxy_cache glimpse_media;
            proxy_cache_key $uri;
            # Signed (private) URLs carry a query string: never answered from the cache, never
            # stored in it.
            proxy_cache_bypass $args;
            proxy_no_cache $args;
            # Past the origin's X-Accel-Expires, ask it again with the ETag: 304 or 404.
            proxy_cache_revalidate on;
            proxy_cache_lock on;
            # A hit costs an open, a stat and a close of its cache file; with the descriptors
            # kept open, 14% less CPU per hit (bench/bench_edge.py). Safe for a cache: nginx
            # checks a kept descriptor against the inode its cache index recorded and opens the
            # file again when the cache has replaced it. (At most this many descriptors, well
            # under worker_rlimit_nofile beside two per proxied connection.)
            open_file_cache max={OPEN_FILES_KEPT} inactive=60s;
            # A cached answer holds the id of the request that filled the cache: each answer
            # gets its own instead (the one the origin saw, on a miss).
            proxy_hide_header X-Request-ID;
            add_header X-Request-ID $request_id always;
            add_header X-Edge-Cache $upstream_cache_status always;
        }}

{refusal_locations}        location @unavailable {{
{_error(503, "unavailable", "The service is not reachable now.", True)}        }}
        location @busy {{
{_error(503, "busy", "Too many connections; try again later.", True)}        }}
        location @too_large {{
{_error(413, "body_too_large", "The request body is too large.", False)}        }}
        location @timeout {{
{_error(408, "request_timeout", "The request did not arrive in time.", False)}        }}
    }}
}}
"""
