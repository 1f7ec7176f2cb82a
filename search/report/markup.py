"""The report's document, written out as Markdown, a self-contained HTML page and one LaTeX
table per table: :class:`Doc` collects headings, text, tables and images once; each format
renders them (figures right-aligned, words left-aligned in HTML)."""

from __future__ import annotations

import base64
import html
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hpsearch.search.report.formats import DASH, missing

__all__ = ["Doc", "latex_table"]


@dataclass
class Doc:
    """Blocks rendered once to Markdown and once to self-contained HTML; tables also to TeX."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, name: str, frame: pd.DataFrame, caption: str = "") -> None:
        self.tables[name] = frame
        self.blocks.append(("table", (name, caption)))

    def image(self, name: str, png: bytes | None, alt: str) -> None:
        if png is not None:
            self.images[name] = png
            self.blocks.append(("img", (name, alt)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "h2":
                out += [f"## {payload}", ""]
            elif kind == "p":
                out += [payload, ""]
            elif kind == "pre":
                out += ["```", payload.rstrip("\n"), "```", ""]
            elif kind == "ul":
                out += [f"- {item}" for item in payload] + [""]
            elif kind == "table":
                name, caption = payload
                out += ([f"*{caption}*", ""] if caption else []) + \
                    [_md_table(self.tables[name]), ""]
            else:
                name, alt = payload
                out += [f"![{alt}]({name}.png)", ""]
        return "\n".join(out)

    def html(self) -> str:
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
               f"<title>{html.escape(self.title)}</title>", f"<style>{_CSS}</style>",
               "</head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(payload)}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(payload)}</p>")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(payload)}</pre>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in payload)
                           + "</ul>")
            elif kind == "table":
                name, caption = payload
                if caption:
                    out.append(f"<p class='caption'>{html.escape(caption)}</p>")
                out.append(_html_table(self.tables[name]))
            else:
                name, alt = payload
                data = base64.b64encode(self.images[name]).decode("ascii")
                out.append(f"<figure><img alt='{html.escape(alt)}' "
                           f"src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child,.text{text-align:left}"
        "th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        "img{max-width:100%}.caption{font-style:italic;margin-bottom:0}")


_NUMBER = re.compile(r"[-+−]?[\d.,]+(e[-+]?\d+)?\s*[%KMGx×]?")


def _text_columns(frame: pd.DataFrame) -> set[str]:
    """Columns holding words rather than figures (trial ids, settings' changes, names): read
    left to right, so left-aligned, where figures line up on the right."""
    out = set()
    for column in frame.columns:
        shown = [str(v) for v in frame[column] if not missing(v) and v != DASH]
        if shown and not all(_NUMBER.fullmatch(v) for v in shown):
            out.add(column)
    return out


def _html_table(frame: pd.DataFrame) -> str:
    text = _text_columns(frame)

    def cell(column: Any, value: Any) -> str:
        shown = html.escape(DASH if missing(value) else str(value))
        return f"<td class='text'>{shown}</td>" if column in text else f"<td>{shown}</td>"

    head = "".join(f"<th class='text'>{html.escape(str(c))}</th>" if c in text
                   else f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True))
                   + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return (DASH if missing(v) else str(v)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "\\": r"\textbackslash{}"}


def latex_table(frame: pd.DataFrame) -> str:
    """A ``tabular`` (booktabs) via pandas' ``to_latex`` when jinja2 is there, else by hand."""
    frame = frame.astype(object).where(frame.notna(), DASH)
    if importlib.util.find_spec("jinja2") is not None:
        return _tex_symbols(frame.to_latex(index=False, escape=True))

    def esc(v: Any) -> str:
        return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(v))

    lines = [r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
             " & ".join(esc(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return _tex_symbols("\n".join([*lines, r"\bottomrule", r"\end{tabular}", ""]))


def _tex_symbols(tex: str) -> str:
    """The few non-ASCII symbols the tables use, as plain LaTeX (pdflatex has no Δ)."""
    return tex.replace("Δ", r"$\Delta$").replace("—", "---").replace("–", "--")
