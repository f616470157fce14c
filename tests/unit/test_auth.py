"""API keys: the keys format, scopes, bearer parsing, and the auth/CORS settings from the env."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.auth import ALL, ANY_KEY, ApiGroup, Authenticator, bearer_key, parse_keys
from app.cli import main
from app.errors import KeysError, PermissionDenied, Unauthenticated
from app.settings import AuthSettings, CorsSettings, Settings

K1, K2, K3 = "k1-0123456789abcdef", "k2-0123456789abcdef", "k3-0123456789abcdef=="


def test_format_comments_groups_and_separators() -> None:
    table = parse_keys(
        f"# keys for the cluster\n{K1}\n\n  {K2} inference, metadata  # the frontend\n"
        f"{K3} statistics;k4-0123456789abcdef *\n", "keys")
    assert table.scopes_of(K1.encode()) == ALL.value
    assert table.scopes_of(K2.encode()) == (ApiGroup.INFERENCE | ApiGroup.METADATA).value
    assert table.scopes_of(K3.encode()) == ApiGroup.STATISTICS.value
    assert table.scopes_of(b"k4-0123456789abcdef") == ALL.value
    assert table.scopes_of(b"k5-0123456789abcdef") is None
    assert table.scopes_of(K1.encode()[:-1]) is None  # a prefix is not the key


def test_the_readme_example_file() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("**Keys file format**")
    example = re.findall(r"```text\n(.*?)\n```", readme[start:], re.S)[0]
    table = parse_keys(example, "README")
    assert [scopes for _, scopes in table.entries] == [
        ApiGroup.INFERENCE.value, ALL.value, ApiGroup.METRICS.value]


def test_a_key_listed_twice_has_both_entries_groups() -> None:
    table = parse_keys(f"{K1} inference\n{K1} metrics", "keys")
    assert table.scopes_of(K1.encode()) == (ApiGroup.INFERENCE | ApiGroup.METRICS).value


@pytest.mark.parametrize("text, expected", [
    ("short", "line 1: a key must be at least 16 characters"),
    ("# ok\nabc\"def0123456789xyz", "line 2: a key must be"),
    (f"{K1} inference,admin", "line 1: unknown API group 'admin'"),
])
def test_errors_name_the_line_never_the_key(text: str, expected: str) -> None:
    with pytest.raises(KeysError) as caught:
        parse_keys(text, "keys")
    assert expected in str(caught.value)
    assert K1 not in str(caught.value) and "def0123456789" not in str(caught.value)


@pytest.mark.parametrize("header, key", [
    (b"Bearer abc", b"abc"),
    (b"bearer   abc ", b"abc"),
    (b"BEARER abc", b"abc"),
    (b"Basic abc", None),
    (b"Bearer", None),
    (b"Bearer ", None),
    (b"abc", None),
    (None, None),
])
def test_bearer_key(header: bytes | None, key: bytes | None) -> None:
    assert bearer_key(header) == key


async def test_check_tells_missing_invalid_and_forbidden_apart() -> None:
    auth = Authenticator(AuthSettings.model_validate({"keys": f"{K1} inference"}))
    await auth.check(f"Bearer {K1}".encode(), ApiGroup.INFERENCE)
    await auth.check(f"Bearer {K1}".encode(), ANY_KEY)
    with pytest.raises(Unauthenticated, match="authentication required"):
        await auth.check(None, ApiGroup.INFERENCE)
    with pytest.raises(Unauthenticated, match="not valid"):
        await auth.check(f"Bearer {K2}".encode(), ApiGroup.INFERENCE)
    with pytest.raises(Unauthenticated, match="not valid"):
        await auth.check(K1.encode(), ApiGroup.INFERENCE)  # no scheme
    with pytest.raises(PermissionDenied, match="may not use the 'repository' API group") as err:
        await auth.check(f"Bearer {K1}".encode(), ApiGroup.REPOSITORY)
    assert K1 not in str(err.value)


async def test_rewritten_file_applies_without_blocking_and_bad_files_keep_old_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    path.write_text(K1)
    auth = Authenticator(AuthSettings(keys_file=path, reload_interval_s=0.01))

    async def poll(condition: Callable[[], Awaitable[bool]]) -> bool:
        """Each check may start a look at the file in a worker thread: poll, with a deadline."""
        for _ in range(1000):
            if await condition():
                return True
            await asyncio.sleep(0.01)
        return False

    async def valid(key: str) -> bool:
        try:
            await auth.check(f"Bearer {key}".encode(), ApiGroup.METRICS)
            return True
        except Unauthenticated:
            return False

    def refused() -> int:
        return sum("keeping the previous API keys" in r.message for r in caplog.records)

    async def still_k2_and_seen(seen: int) -> bool:
        return await valid(K2) and refused() > seen

    assert await valid(K1)
    path.write_text(f"{K2}\n")
    assert await poll(lambda: valid(K2))
    assert not await valid(K1)
    # Wrong, empty (as while half-written) or gone: each is seen and the last good keys stay.
    for broken in ("", "not a key", "# only a comment\n", None):
        seen = refused()
        if broken is None:
            path.unlink()
        else:
            path.write_text(broken)
        assert await poll(lambda: still_k2_and_seen(seen))  # noqa: B023
    path.write_text(K1)
    assert await poll(lambda: valid(K1))


async def test_a_key_just_added_works_on_its_first_request(tmp_path: Path) -> None:
    """Issue 14, item 5: no periodic look is due (an hour apart), yet the new key works."""
    path = tmp_path / "keys"
    path.write_text(f"{K1}\n")
    auth = Authenticator(AuthSettings(keys_file=path, reload_interval_s=3600))
    await auth.check(f"Bearer {K1}".encode(), ApiGroup.METRICS)
    with path.open("a") as keys:
        keys.write(f"{K2} metrics\n")
    await auth.check(f"Bearer {K2}".encode(), ApiGroup.METRICS)
    with pytest.raises(Unauthenticated):  # still refused once read: it is not in the file
        await auth.check(f"Bearer {K3}".encode(), ApiGroup.METRICS)
    with pytest.raises(PermissionDenied):  # the groups of the new key apply
        await auth.check(f"Bearer {K2}".encode(), ApiGroup.INFERENCE)


async def test_unknown_keys_share_reads_at_most_one_per_interval(tmp_path: Path) -> None:
    """A flood of bad keys shares one read; the next flood waits for the interval to pass
    since that read began (ordered against a timer at half the interval, not timed)."""
    path = tmp_path / "keys"
    path.write_text(f"{K1}\n")
    interval_s = 0.6
    auth = Authenticator(AuthSettings(keys_file=path, reload_interval_s=3600,
                                      unknown_key_reload_interval_ms=round(interval_s * 1000)))
    events: list[str] = []
    read_at: list[float] = []
    reload = auth._reload

    def counted(always: bool = False) -> None:
        read_at.append(time.monotonic())  # the event loop's clock
        events.append("read")
        reload(always)

    auth._reload = counted  # type: ignore[method-assign]

    async def flood(wave: int) -> None:
        bad = [f"Bearer bad-key-{wave}-{n:04d}-0123456789".encode() for n in range(200)]
        results = await asyncio.gather(*(auth.check(key, ApiGroup.METRICS) for key in bad),
                                       return_exceptions=True)
        assert all(isinstance(r, Unauthenticated) for r in results)

    await flood(1)
    assert events == ["read"]  # 200 unknown keys, one read
    loop = asyncio.get_running_loop()
    loop.call_at(read_at[0] + interval_s / 2, events.append, "half the interval")
    await flood(2)
    # Without the rate limit the second read would start at once, before the timer.
    assert events == ["read", "half the interval", "read"]


def test_unusable_keys_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="cannot read the API keys file"):
        Authenticator(AuthSettings(keys_file=tmp_path / "missing"))
    (tmp_path / "bad").write_bytes(b"\xff\xfe" + K1.encode())
    with pytest.raises(KeysError, match="not UTF-8"):
        Authenticator(AuthSettings(keys_file=tmp_path / "bad"))


def test_cli_refuses_a_bad_keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys").write_text(f"{K1} everything\n")
    monkeypatch.setenv("ONNX_SERVE_AUTH__KEYS_FILE", str(tmp_path / "keys"))
    assert main(["--model-repository", str(tmp_path), "--http-port", "0",
                 "--grpc-port", "0", "--host", "127.0.0.1"]) == 2
    err = capsys.readouterr().err
    assert "line 1: unknown API group 'everything'" in err and K1 not in err


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Settings().auth.enabled and not Settings().cors.enabled
    monkeypatch.setenv("ONNX_SERVE_AUTH__KEYS", f"{K1} inference;{K2}")
    monkeypatch.setenv("ONNX_SERVE_CORS__ALLOW_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ONNX_SERVE_CORS__ALLOW_METHODS", '["GET"]')
    settings = Settings()
    assert settings.auth.enabled and K1 not in repr(settings)
    assert settings.cors.allow_origins == ["https://a.example", "https://b.example"]
    assert settings.cors.allow_methods == ["GET"]


def test_settings_refuse_credentials_for_every_origin_and_half_tls() -> None:
    with pytest.raises(ValidationError, match="list the origins"):
        CorsSettings(allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ValidationError, match="go together"):
        Settings.model_validate({"http": {"tls_cert_path": "x.crt"}})
