"""Class data sharing (CDS) for the local broker's JVM: a Kafka node starts about a third faster.

A Kafka node spends most of its start loading and verifying thousands of classes from the jars.
``infertide kafka fetch`` (``make install``) starts one broker of its own after fetching the jars and
stops it cleanly, and HotSpot writes the classes it used to a dynamic CDS archive
(``-XX:ArchiveClassesAtExit``, JDK 13+); every later JVM on the same jars and Java maps that archive
instead (``-XX:SharedArchiveFile``; ``-Xshare:auto`` falls back to plain loading if it does not
match, so a stale archive costs nothing). No archive: brokers start as before. Measured here: 5.2 s
-> 3.3 s from launch to the first metadata answer (docs/performance.md, "The local broker's start").

The archive sits beside the jars (``<cache>/kafka/<version>/``), named after the Java binary, written
under a name of its own and renamed into place only after a clean exit, so a JVM killed mid-write
never leaves a torn archive.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

__all__ = ["ClassArchive"]

# What a JVM stopped with SIGTERM (Kafka's shutdown hook, then exit) or exiting on its own returns.
CLEAN_EXITS = (0, 143)


class ClassArchive:
    """The CDS archive for JVMs started with ``libs`` on their class path by the Java at ``java``."""

    def __init__(self, libs: Path, java: str) -> None:
        key = hashlib.sha256(os.path.realpath(java).encode()).hexdigest()[:12]
        self.path = libs.parent / f"classes-{key}.jsa"

    def flags(self) -> list[str]:
        """JVM flags that map the archive; none when there is no archive yet."""
        if not self.path.is_file():
            return []
        return [f"-XX:SharedArchiveFile={self.path}", "-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]

    def write_flags(self) -> tuple[list[str], Path]:
        """JVM flags that write the archive at exit to a path of its own, which :meth:`keep` puts in place."""
        pending = self.path.with_name(f"{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        return [f"-XX:ArchiveClassesAtExit={pending}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"], pending

    def keep(self, pending: Path, returncode: int | None) -> bool:
        """After the JVM that was writing ``pending`` exited: put it in place if it exited cleanly, else drop it."""
        if returncode in CLEAN_EXITS and pending.is_file() and pending.stat().st_size > 0:
            os.replace(pending, self.path)
            return True
        pending.unlink(missing_ok=True)
        return False
