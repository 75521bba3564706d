"""The broker JVM's class archive: used only when complete, put in place only after a clean exit."""

from __future__ import annotations

from pathlib import Path

from infertide.local.class_archive import ClassArchive


def test_no_archive_no_flags_and_an_archive_is_mapped(tmp_path: Path) -> None:
    archive = ClassArchive(tmp_path / "libs", "/usr/bin/java")
    assert archive.path.parent == tmp_path
    assert archive.flags() == []
    archive.path.write_bytes(b"cds")
    assert f"-XX:SharedArchiveFile={archive.path}" in archive.flags()
    assert "-Xshare:auto" in archive.flags()  # a stale archive falls back to plain loading


def test_the_archive_is_named_after_the_java_binary(tmp_path: Path) -> None:
    assert ClassArchive(tmp_path / "libs", "/a/java").path != ClassArchive(tmp_path / "libs", "/b/java").path


def test_written_under_its_own_name_and_kept_only_after_a_clean_exit(tmp_path: Path) -> None:
    archive = ClassArchive(tmp_path / "libs", "/usr/bin/java")
    flags, pending = archive.write_flags()
    assert flags[0] == f"-XX:ArchiveClassesAtExit={pending}" and pending != archive.path
    pending.write_bytes(b"half")
    assert not archive.keep(pending, -9)  # SIGKILLed mid-write: dropped
    assert not pending.exists() and not archive.path.exists()
    flags, pending = archive.write_flags()
    pending.write_bytes(b"whole")
    assert archive.keep(pending, 143)  # SIGTERM: Kafka's shutdown hook, then exit
    assert archive.path.read_bytes() == b"whole" and not pending.exists()


def test_an_empty_or_missing_write_is_not_kept(tmp_path: Path) -> None:
    archive = ClassArchive(tmp_path / "libs", "/usr/bin/java")
    _, pending = archive.write_flags()
    assert not archive.keep(pending, 0)
    pending.write_bytes(b"")
    assert not archive.keep(pending, 0)
    assert not archive.path.exists()
