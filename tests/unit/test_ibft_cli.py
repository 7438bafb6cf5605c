"""``bootinit ibft show|build|check`` through ``firmware_tables.cli.main``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_tables.cli import add_parser, main
from firmware_tables.ibft import parse_ibft, write_sysfs_tree

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"
REPO = Path(__file__).resolve().parents[2]


def table_path(name: str) -> Path:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"test table {path} is not available (shared testdata missing)")
    return path


DRACUT = "dracut-ng_TEST-70-ISCSI_ibft.table"
FWTS2 = "fwts_ibft_0002.bin"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ibft", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def build_chap_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "t.bin"
    code, _, err = run(
        capsys, "build", "--initiator-name", "iqn.2026-11.test:client",
        "--ip", "10.77.5.2/24", "--gateway", "10.77.5.1", "--mac", "52:54:00:aa:bb:cc",
        "--target", "iscsi://joe%sesame-sesame@10.77.5.1/iqn.2026-11.test:disk/1",
        "--reverse-chap-user", "tgt", "--reverse-chap-secret", "reverse-secret",
        "-o", str(out),
    )
    assert code == 0, err
    return out


def test_show_human(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", str(table_path(DRACUT)))
    assert code == 0 and err == ""
    assert "name iqn.1994-05.com.redhat:633114aacf2" in out
    assert "address 192.168.50.101/24 (origin 3 dhcp)" in out
    assert "portal 192.168.50.1:3260, LUN 1" in out
    assert "MAC 52:54:00:12:34:00, VLAN 0, PCI 00:03.0" in out


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--json", str(table_path(DRACUT)))
    assert code == 0
    doc = json.loads(out)
    assert doc["header"]["length"] == 381 and doc["problems"] == []
    assert doc["nics"][0]["ip_address"] == "192.168.50.101"
    assert doc["targets"][0]["lun"] == 1 and doc["targets"][0]["name"].endswith("target0")


def test_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = build_chap_table(tmp_path, capsys)
    for extra in ([], ["--json"], ["--sysfs-format"], ["--sysfs-format", "--json"]):
        code, out, _ = run(capsys, "show", *extra, str(table))
        assert code == 0
        assert "sesame-sesame" not in out and "reverse-secret" not in out
        assert "***" in out
    code, out, _ = run(capsys, "show", "--show-secrets", "--sysfs-format", str(table))
    assert "target0/chap-secret:sesame-sesame" in out.splitlines()
    assert "target0/rev-chap-name-secret:reverse-secret" in out.splitlines()


def test_show_sysfs_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--sysfs-format", str(table_path(DRACUT)))
    assert code == 0
    lines = out.splitlines()
    assert "ethernet0/ip-addr:192.168.50.101" in lines
    assert "ethernet0/subnet-mask:255.255.255.0" in lines
    assert "target0/lun:01000000" in lines
    code, out, _ = run(capsys, "show", "--sysfs-format", "--json", str(table_path(DRACUT)))
    assert json.loads(out)["ethernet0"]["subnet-mask"] == "255.255.255.0"


def test_show_from_sysfs_acpi_and_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = table_path(DRACUT).read_bytes()
    write_sysfs_tree(parse_ibft(data), tmp_path / "ibft")
    code, out, _ = run(capsys, "show", "--sysfs", str(tmp_path / "ibft"))
    assert code == 0 and "name iqn.2009-06.dracut:target0" in out
    acpi = tmp_path / "tables"
    acpi.mkdir()
    (acpi / "iBFT").write_bytes(data)
    code, out, _ = run(capsys, "show", "--acpi", str(acpi), "--json")
    assert code == 0 and json.loads(out)["header"]["oem_id"] == "DRACUT"
    image = bytearray(0x80000)
    image[0x1E620 : 0x1E620 + len(data)] = data
    (tmp_path / "mem.bin").write_bytes(image)
    code, out, _ = run(capsys, "show", "--memory", str(tmp_path / "mem.bin"))
    assert code == 0 and "Source: memory at 0x9e620" in out


def test_show_rejects_bad_table_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", str(table_path(FWTS2)))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "header.checksum at offset 0x9" in err and "--lenient" in err
    code, out, _ = run(capsys, "show", "--lenient", str(table_path(FWTS2)))
    assert code == 0 and "Problems (13):" in out and "control.flags" in out


def test_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", str(table_path(DRACUT)))
    assert code == 0 and "OK (381 bytes, 1 NIC, 1 target)" in out
    code, out, _ = run(capsys, "check", str(table_path(FWTS2)))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith("13 problems")
    assert any("nic0.flags at offset 0x9d: reserved bits 0x08 set" in x for x in lines)
    code, out, _ = run(capsys, "check", "--json", str(table_path(FWTS2)))
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and len(doc["problems"]) == 13


def test_build_from_toml_with_ipxe_layout(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "boot.toml"
    cfg.write_text(
        'initiator_name = "iqn.2026-11.test:client"\n'
        '[[nics]]\naddress = "10.77.5.2/24"\n'
        '[[targets]]\nroot_path = "iscsi:10.77.5.1:::1:iqn.2026-11.test:disk"\n'
    )
    out = tmp_path / "t.bin"
    code, _, err = run(capsys, "build", "--config", str(cfg), "--layout", "ipxe", "-o", str(out))
    assert code == 0 and "wrote" in err
    t = parse_ibft(out.read_bytes(), exact_length=True)
    assert t.header.oem_id == "FENSYS" and t.targets[0].offset == 0x180
    assert t.targets[0].name == "iqn.2026-11.test:disk"


def test_build_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "t.bin")
    code, _, err = run(capsys, "build", "-o", out)
    assert code == 2 and "--initiator-name" in err
    code, _, err = run(capsys, "build", "--config", "x.toml", "--ip", "1.2.3.4/8", "-o", out)
    assert code == 2 and "--ip" in err
    code, _, err = run(capsys, "build", "--initiator-name", "iqn.x", "--target",
                       "iscsi:h:::1:iqn.y", "--chap-user", "u", "-o", out)
    assert code == 2 and "--chap-secret" in err
    code, _, err = run(capsys, "build")  # argparse: -o is required
    assert code == 2
    code, _, err = run(capsys, "show")
    assert code == 2 and "exactly one of" in err
    code, _, err = run(capsys, "show", "a", "--acpi")
    assert code == 2


def test_build_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "t.bin")
    code, _, err = run(capsys, "build", "--initiator-name", "iqn.x", "--target",
                       "iscsi://joe%topsecret@h/iqn.y", "-o", out)
    assert code == 1 and len(err.splitlines()) == 1
    assert "topsecret" not in err and "missing /<lun>" in err
    code, _, err = run(capsys, "build", "--initiator-name", "iqn.x", "--target",
                       "iscsi:san.example:::1:iqn.y", "-o", out)
    assert code == 1 and "host name" in err
    code, _, err = run(capsys, "build", "--initiator-name", "iqn.x", "--ip", "300.0.0.1/8",
                       "--target", "iscsi:10.0.0.1:::1:iqn.y", "-o", out)
    assert code == 1 and len(err.splitlines()) == 1
    code, _, err = run(capsys, "show", str(tmp_path / "missing.bin"))
    assert code == 1 and "missing.bin" in err and len(err.splitlines()) == 1


def test_add_parser_sets_func_for_every_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="bootinit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    for argv in (["ibft", "show", "x"], ["ibft", "check", "x"], ["ibft", "build", "-o", "x"]):
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_python_dash_m(tmp_path: Path) -> None:
    path = table_path(DRACUT)
    proc = subprocess.run([sys.executable, "-m", "firmware_tables.cli", "ibft", "check",
                           str(path)], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)
    assert proc.returncode == 0 and "OK" in proc.stdout
