"""`.reg` exports as regedit writes them: UTF-16 with BOM, ANSI, continuation lines, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.host.regfile import RegFile, parse_reg
from probe.host.registry import (
    REG_BINARY,
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_MULTI_SZ,
    REG_SZ,
    RegValue,
)

REGISTRY = Path(__file__).resolve().parents[2] / "fixtures" / "registry"
MSMI = r"HKLM\SYSTEM\CurrentControlSet\Services\MSExchangeMSMI"


def value_of(reg: RegFile, path: str, name: str) -> RegValue:
    """The value the test knows is there (fails the test if it is not)."""
    value = reg.value(path, name)
    assert value is not None, f"no value {name!r} under {path}"
    return value


def test_utf16_export_with_wrapped_expand_sz_is_decoded() -> None:
    reg = RegFile.load(REGISTRY / "msmail-relocated.reg")
    value = reg.value(MSMI, "imagepath")
    assert value is not None and value.type == REG_EXPAND_SZ
    assert value.data == r"C:\exchsrvr\connect\msmcon\bin\msmi.exe"
    library = reg.value(MSMI + r"\Performance", "Library")
    assert library and library.type == REG_SZ and (library.text or "").startswith("D:\\")
    share = reg.value(
        r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\LanmanServer"
        r"\Shares",
        "Maildat$",
    )
    assert share and share.type == REG_MULTI_SZ
    assert r"Path=D:\exchsrvr\connect\msmcon\maildata" in share.strings


def test_ansi_regedit4_export_is_read() -> None:
    reg = RegFile.load(REGISTRY / "msmail-relocated-ansi.reg")
    assert value_of(reg, MSMI, "ImagePath").text == r"D:\exchsrvr\connect\msmcon\bin\msmi.exe"


def test_every_value_form_comments_default_and_deleted_keys() -> None:
    text = "\r\n".join(
        [
            "Windows Registry Editor Version 5.00",
            "; a comment",
            r"[HKEY_LOCAL_MACHINE\SOFTWARE\Test]",
            '@="default \\"quoted\\" C:\\\\dir\\\\"',
            '"Count"=dword:0000002a',
            '"Blob"=hex:de,ad,\\',
            "  be,ef",
            '"Multi"=hex(7):61,00,00,00,62,00,00,00,00,00',
            '"Gone"="x"',
            '"Gone"=-',
            r"[HKEY_LOCAL_MACHINE\SOFTWARE\Test\Child]",
            '"x"="y"',
            r"[-HKEY_LOCAL_MACHINE\SOFTWARE\Test\Child]",
            "",
        ]
    )
    reg = parse_reg(text, "t.reg")
    key = r"HKLM\SOFTWARE\Test"
    assert value_of(reg, key, "").data == 'default "quoted" C:\\dir\\'
    assert (value_of(reg, key, "Count").type, value_of(reg, key, "Count").data) == (REG_DWORD, 42)
    assert (value_of(reg, key, "Blob").type, value_of(reg, key, "Blob").data) == (
        REG_BINARY,
        b"\xde\xad\xbe\xef",
    )
    assert value_of(reg, key, "Multi").strings == ("a", "b")
    assert reg.value(key, "Gone") is None
    assert not reg.key_exists(key + r"\Child") and reg.key_exists(key)


def test_controlset001_export_answers_currentcontrolset_lookups() -> None:
    reg = parse_reg('REGEDIT4\n[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\X]\n"A"="b"\n')
    assert value_of(reg, r"HKLM\SYSTEM\CurrentControlSet\Services\X", "A").text == "b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello\n", "not a registry export"),
        ('REGEDIT4\n"A"="b"\n', ":2: a value before any [key]"),
        ('REGEDIT4\n[HKLM\\X]\n"A"=hex:zz\n', ":3: bad hex byte"),
        ('REGEDIT4\n[HKLM\\X]\n"A"=dword:123456789\n', ":3: dword"),
        ('REGEDIT4\n[HKLM\\X]\n"A"="open\n', ":3: unterminated string"),
        ("REGEDIT4\n[NOPE\\X]\n", ":2: registry key"),
        ("REGEDIT4\n[HKLM\\X]\nrubbish\n", ":3: expected"),
    ],
)
def test_broken_exports_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ProbeError, match=message.replace("[", r"\[")):
        parse_reg(text, "case.reg")


def test_broken_fixture_and_unreadable_path_are_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match=r"broken.reg:4: bad hex byte 'zz'"):
        RegFile.load(REGISTRY / "broken.reg")
    with pytest.raises(ProbeError, match="cannot read registry export"):
        RegFile.load(tmp_path)


def test_a_long_hex_value_over_continuation_lines_is_joined_whole() -> None:
    """3 MB of hex in 80-column lines, as regedit wraps them: joined once, not line by line."""
    data = bytes(range(256)) * 4096
    hexed = ",".join(f"{b:02x}" for b in data)
    lines = [hexed[i : i + 75] for i in range(0, len(hexed), 75)]
    wrapped = "\\\r\n  ".join(lines)
    text = f'REGEDIT4\r\n\r\n[{MSMI}]\r\n"Blob"=hex:{wrapped}\r\n'
    value = parse_reg(text).value(MSMI, "Blob")
    assert value is not None and value.type == REG_BINARY and value.data == data


def test_utf16_without_bom_and_with_an_odd_byte_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.reg"
    broken.write_bytes("Windows Registry Editor Version 5.00\r\n".encode("utf-16-le") + b"\x00")
    with pytest.raises(ProbeError, match="broken UTF-16 text"):
        RegFile.load(broken)
