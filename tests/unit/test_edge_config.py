"""The nginx configuration `glimpse edge-config` prints: what it holds for the settings, what it
refuses, and that nginx itself accepts it (`nginx -t`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from glimpse.config import Settings
from glimpse.edge.nginx import EdgeConfigError, EdgeOptions, max_body_bytes, nginx_config
from tests.edges import nginx_binary


def _options(tmp_path: Path, **changes: object) -> EdgeOptions:
    base = {
        "listen": "127.0.0.1:8080",
        "upstream": "http://127.0.0.1:8000",
        "cache_dir": tmp_path / "cache",
    }
    return EdgeOptions(**{**base, **changes})  # type: ignore[arg-type]


def _nginx_accepts(tmp_path: Path, text: str) -> None:
    (tmp_path / "cache").mkdir(exist_ok=True)
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    done = subprocess.run(
        [nginx_binary(), "-t", "-c", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return cert, key


def test_the_plain_config_is_accepted_by_nginx_and_keeps_its_files_in_the_cache_dir(
    tmp_path: Path,
) -> None:
    text = nginx_config(_options(tmp_path), Settings())
    _nginx_accepts(tmp_path, text)
    cache = str((tmp_path / "cache").resolve())
    for directive in ("pid", "error_log", "access_log", "client_body_temp_path", "proxy_temp_path"):
        [line] = re.findall(rf"^\s*{directive} .*$", text, re.M)
        assert f'"{cache}/' in line, line
    assert f'proxy_cache_path "{cache}/media"' in text
    assert (
        "listen 127.0.0.1:8080;" in text
        and "ssl" not in text.split("http {")[1].split("location")[0]
    )
    assert "server 127.0.0.1:8000;" in text


def test_tls_is_terminated_when_given_a_certificate_and_key(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    text = nginx_config(_options(tmp_path, tls_cert=cert, tls_key=key), Settings())
    _nginx_accepts(tmp_path, text)
    assert "listen 127.0.0.1:8080 ssl http2;" in text
    assert f'ssl_certificate "{cert.resolve()}";' in text
    assert f'ssl_certificate_key "{key.resolve()}";' in text


def test_timeouts_and_limits_follow_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        header_timeout_seconds=7,
        upload_idle_timeout_seconds=33,
        max_connections_per_client=12,
        max_video_bytes=10 * 1024 * 1024,
        max_image_bytes=1024 * 1024,
        max_files_per_post=3,
    )
    text = nginx_config(_options(tmp_path), settings)
    assert "client_header_timeout 7s;" in text
    assert "client_body_timeout 33s;" in text
    assert "limit_conn glimpse_per_client 12;" in text
    assert max_body_bytes(settings) == 11 * 1024 * 1024
    assert f"client_max_body_size {11 * 1024 * 1024};" in text
    # The default: the 10 s header deadline the README asks of a proxy.
    assert "client_header_timeout 10s;" in nginx_config(_options(tmp_path), Settings())
    uncapped = nginx_config(_options(tmp_path), Settings(max_connections_per_client=0))
    assert "limit_conn glimpse_per_client" not in uncapped
    _nginx_accepts(tmp_path, uncapped)


def test_media_is_cached_by_path_and_signed_urls_bypass_the_cache(tmp_path: Path) -> None:
    text = nginx_config(_options(tmp_path), Settings())
    media = text.split("location /media/ {")[1].split("}")[0]
    assert "proxy_cache glimpse_media;" in media
    assert "proxy_cache_key $uri;" in media
    assert "proxy_cache_bypass $args;" in media and "proxy_no_cache $args;" in media
    assert "proxy_cache_revalidate on;" in media
    # The API's trusted-proxy headers, for every location.
    for header in ("X-Forwarded-For $proxy_add_x_forwarded_for", "X-Request-ID $request_id"):
        assert f"proxy_set_header {header};" in text


def test_cache_hits_keep_their_files_open_within_the_descriptor_budget(tmp_path: Path) -> None:
    text = nginx_config(_options(tmp_path), Settings())
    media = text.split("location /media/ {")[1].split("}")[0]
    kept = re.search(r"open_file_cache max=(\d+) inactive=\d+s;", media)
    assert kept, "cache hits should not open, stat and close their file each time"
    # Two descriptors per proxied connection, and the kept files, under the worker's limit.
    connections = int(re.search(r"worker_connections (\d+);", text).group(1))  # type: ignore[union-attr]
    limit = int(re.search(r"worker_rlimit_nofile (\d+);", text).group(1))  # type: ignore[union-attr]
    assert 2 * connections + int(kept.group(1)) < limit
    # Not for the API: nothing there is a file nginx opens.
    assert text.count("open_file_cache") == 1


def test_user_and_workers_are_written_when_given(tmp_path: Path) -> None:
    text = nginx_config(_options(tmp_path, user="www-data", worker_processes="3"), Settings())
    assert "\nuser www-data;\n" in text and "worker_processes 3;" in text
    assert "\nuser " not in nginx_config(_options(tmp_path), Settings())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tls_cert": Path("/c.pem")}, "go together"),
        ({"tls_key": Path("/k.pem")}, "go together"),
        ({"upstream": "https://127.0.0.1:8000"}, "--upstream"),
        ({"upstream": "http://127.0.0.1:8000/api"}, "--upstream"),
        ({"upstream": "127.0.0.1:8000"}, "--upstream"),
        ({"listen": "8080"}, "--listen"),
        ({"listen": "127.0.0.1:99999"}, "--listen"),
        ({"cache_dir": Path("/tmp/a b")}, "cache"),
        ({"cache_dir": Path("/tmp/x;include /etc/passwd")}, "cache"),
        ({"cache_dir": Path("/tmp/$host")}, "cache"),
        ({"worker_processes": "many"}, "--worker-processes"),
        ({"cache_max_size": "10 gigs"}, "--cache-max-size"),
        ({"user": "root; include x"}, "--user"),
    ],
)
def test_options_that_cannot_work_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(EdgeConfigError, match=re.escape(message)):
        nginx_config(_options(tmp_path, **changes), Settings())


def test_ipv6_addresses_are_written_as_nginx_reads_them(tmp_path: Path) -> None:
    text = nginx_config(
        _options(tmp_path, listen="[::1]:8443", upstream="http://[::1]:8000"), Settings()
    )
    assert "listen [::1]:8443;" in text and "server [::1]:8000;" in text


def test_the_shipped_example_is_what_the_command_prints() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "glimpse-edge.conf"
    options = EdgeOptions(
        listen="0.0.0.0:443",
        upstream="http://127.0.0.1:8000",
        cache_dir=Path("/var/cache/glimpse-edge"),
        tls_cert=Path("/etc/glimpse/tls/fullchain.pem"),
        tls_key=Path("/etc/glimpse/tls/privkey.pem"),
        user="www-data",
    )
    # The defaults, whatever GLIMPSE_* variables the test run has.
    assert nginx_config(options, Settings.model_construct()) == example.read_text()


def test_a_missing_nginx_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.edges as edges

    monkeypatch.setattr(edges.shutil, "which", lambda name: None)
    monkeypatch.setattr(edges.os.path, "exists", lambda path: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nginx is not installed"):
        edges.nginx_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        edges.nginx_binary()
