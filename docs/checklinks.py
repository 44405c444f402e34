"""Check every internal link of the built HTML: ``python docs/checklinks.py docs/_build/html``.

A relative ``href`` or ``src`` must name a file of the build, and its ``#fragment`` an ``id``
(or ``name``) in that file. Links to other sites are not followed (the build is offline).
Exits 1 and lists the broken links, else prints how many were checked.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.anchors.add(value)
            elif name in ("href", "src") and tag not in ("base",):
                self.links.append(value)


def parse(path: Path, cache: dict[Path, Page]) -> Page:
    if path not in cache:
        page = Page()
        page.feed(path.read_text(errors="replace"))
        cache[path] = page
    return cache[path]


def internal(link: str) -> bool:
    parts = urlsplit(link)
    return not (parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")))


def broken_links(root: Path) -> tuple[int, list[str]]:
    cache: dict[Path, Page] = {}
    checked, broken = 0, []
    for html in sorted(root.rglob("*.html")):
        for link in parse(html, cache).links:
            if not internal(link):
                continue
            checked += 1
            parts = urlsplit(link)
            target = (html.parent / unquote(parts.path)).resolve() if parts.path else html
            if target.is_dir():
                target = target / "index.html"
            where = f"{html.relative_to(root)}: {link}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in parse(target, cache).anchors:
                    broken.append(f"{where} (no such anchor)")
    return checked, broken


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "docs/_build/html")
    checked, broken = broken_links(root)
    for line in broken:
        print(f"broken link: {line}")
    print(f"checklinks: {checked} internal links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
