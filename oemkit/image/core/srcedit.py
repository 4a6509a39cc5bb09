"""The edits of recipe.REBUILDS applied to unpacked Debian sources, run by rebuild.py as an mmdebstrap hook
(`python -m oemkit.image.core.srcedit CHROOT PLAN.json`). Each edit is an exact replacement that must match as
often as the recipe says; the changelog gains an entry with the local version suffix and the previous entry's
date, so dpkg-buildpackage's SOURCE_DATE_EPOCH (taken from it) is the source's own."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from oemkit.image.core.rebuild import LOCAL_SUFFIX, MAINTAINER


class EditError(Exception):
    pass


def apply(tree: Path, edits: list[list], why: str) -> None:
    for name, old, new, count in edits:
        path = tree / name
        text = path.read_text()
        found = text.count(old)
        if found != count:
            raise EditError(f"{path}: {old!r} found {found} times, the recipe expects {count}")
        path.write_text(text.replace(old, new))
    _changelog(tree / "debian" / "changelog", why)


def _changelog(path: Path, why: str) -> None:
    text = path.read_text()
    head = re.match(r"(\S+) \(([^)]+)\) (\S+); (urgency=[^\s,]+)", text)
    date = re.search(r"^ -- .+?>  (.+)$", text, re.M)
    if head is None or date is None:
        raise EditError(f"{path}: no changelog entry to follow")
    source, version, dist, urgency = head.groups()
    entry = (
        f"{source} ({version}{LOCAL_SUFFIX}) {dist}; {urgency}\n\n"
        f"  * oemkit core: {why}\n\n"
        f" -- {MAINTAINER}  {date.group(1)}\n\n"
    )
    path.write_text(entry + text)


def main(argv: list[str]) -> int:
    try:
        chroot, plan = Path(argv[0]), json.loads(Path(argv[1]).read_text())
        for item in plan:
            apply(chroot / "build" / item["source"], item["edits"], item["why"])
    except (OSError, ValueError, EditError) as exc:
        print(f"srcedit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
