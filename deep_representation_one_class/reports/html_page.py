"""Small HTML building blocks for the reports: escaped tables, figures, image galleries, a page.

The pages must open from disk with no server and no network: every style is inline in the
page, there is no script, and every image is a relative path into the report's own folder.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 20px 40px; color: #222; }
h1 { font-size: 1.5em; margin-top: 1em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 3px; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
td.best { font-weight: bold; background: #e8f3e8; }
.muted { color: #777; font-size: 0.9em; }
.figs { display: flex; flex-wrap: wrap; gap: 10px; }
.figs figure { margin: 0; } .figs img { max-width: 100%; border: 1px solid #eee; }
.figs.c2 figure { width: calc(50% - 5px); } .figs.c3 figure { width: calc(33.3% - 7px); }
.figs.c2 img, .figs.c3 img { width: 100%; }
figcaption { font-size: 0.8em; color: #555; max-width: 640px; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.thumb { text-align: center; font-size: 0.75em; width: 104px; }
.thumb img { width: 96px; height: 96px; image-rendering: pixelated; border: 4px solid #999; }
.thumb.out img { border-color: #d62728; } .thumb.in img { border-color: #1f77b4; }
.wide img { max-width: 100%; }
details { margin: 6px 0; } summary { cursor: pointer; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of any value; bytes of names that are not valid UTF-8 (surrogate
    escapes) are shown as ``\\xNN``."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(text, quote=True)


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    left: int = 1,
    best: set[tuple[int, int]] | None = None,
    cls: str = "",
) -> str:
    """A table; the first ``left`` columns are left-aligned, ``best`` (row, col) cells bold; an
    all-empty ``header`` draws no header row."""
    best = best or set()
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if any(header):
        out.append("<tr>")
        out += [
            f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header)
        ]
        out.append("</tr>")
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            classes = " ".join(
                x for x in ("l" if c < left else "", "best" if (r, c) in best else "") if x
            )
            cells.append(
                f'<td class="{classes}">{esc(value)}</td>' if classes else f"<td>{esc(value)}</td>"
            )
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure(src: str, caption: str = "", alt: str = "", cls: str = "") -> str:
    """An image with a caption; ``src`` is a path relative to the page."""
    attr = f' class="{esc(cls)}"' if cls else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure{attr}><img src="{esc(src)}" alt="{esc(alt or caption or src)}">{cap}</figure>'


def figures(items: Iterable[tuple[str, str]], columns: int = 0) -> str:
    """A wrapping row of (src, caption) figures; ``columns`` 2 or 3 scales them to fit."""
    cls = f"figs c{columns}" if columns in (2, 3) else "figs"
    return f'<div class="{cls}">' + "".join(figure(s, c) for s, c in items) + "</div>"


def gallery(items: Iterable[tuple[str, str, bool | None]]) -> str:
    """Thumbnails (src, caption, is_outlier): red frame = outlier, blue = inlier."""
    out = ['<div class="gallery">']
    for src, caption, outlier in items:
        kind = "" if outlier is None else ("out" if outlier else "in")
        lines = "<br>".join(esc(line) for line in caption.split("\n"))
        out.append(
            f'<div class="thumb {kind}"><img src="{esc(src)}" alt="{esc(caption)}">'
            f"<div>{lines}</div></div>"
        )
    out.append("</div>")
    return "\n".join(out)


def section(title: str, *parts: str, level: int = 2, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{esc(title)}</h{level}>\n" + "\n".join(p for p in parts if p)


def paragraph(text: str, muted: bool = False) -> str:
    return f'<p class="muted">{esc(text)}</p>' if muted else f"<p>{esc(text)}</p>"


def page(title: str, body: Sequence[str]) -> str:
    """A complete standalone HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="generator" content="deep_representation_one_class">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")


def markdown(text: str) -> str:
    """The Markdown subset the aggregation writes (headings, pipe tables, lists, paragraphs)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)
            out.append(f"<h{level}>{esc(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            body = [row for row, raw in zip(cells[1:], block[1:]) if not _TABLE_RULE.match(raw)]
            out.append(table(cells[0], body))
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{esc(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{esc(' '.join(para))}</p>")
    return "\n".join(out)
