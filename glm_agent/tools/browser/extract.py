"""HTML -> readable markdown-like text for the model.

Runs on the DOM Chromium serialised after scripts ran (`page.content()`), or on raw HTML
files (the local search index), with the stdlib parser: no extra dependency, and the same
code is testable without a browser. Keeps headings, paragraphs, lists, tables, code and
quotes; numbers links 【n†text】 so the model can follow them with `mclick`/`open_url`;
drops scripts, styles, navigation, footers, asides, forms, hidden elements and cookie /
consent banners. `main_only=True` keeps just the main text (`<main>`, `<article>` or
`role=main` when the page has one) and drops link-dense blocks, for quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Callable
from urllib.parse import urljoin, urlsplit

__all__ = ["Link", "Extracted", "extract", "sniff_charset", "decode_html"]

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
_DROP = {
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed", "nav",
    "footer", "aside", "form", "button", "select", "textarea", "input", "label", "dialog", "head",
    "map", "audio", "video", "picture", "math",
}  # fmt: skip
_DROP_ROLES = {"navigation", "contentinfo", "complementary", "dialog", "alertdialog", "search", "menu", "menubar"}
_BOILERPLATE = re.compile(
    r"cookie|consent|gdpr|onetrust|cc-banner|cc-window|newsletter|subscribe|advert|sponsor|"
    r"sidebar|share-|social|breadcrumb|skip-link|popup|modal|paywall",
    re.I,
)
_BLOCK = {
    "p", "div", "section", "article", "main", "header", "body", "html", "figure", "figcaption",
    "address", "details", "summary", "dl", "dt", "dd", "center", "hgroup",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Tags whose open instance a new start tag of the same group closes implicitly.
_IMPLIED = {"p": {"p"}, "li": {"li"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"}, "tr": {"tr"}, "td": {"td", "th"}, "th": {"td", "th"}, "option": {"option"}}  # fmt: skip
_WS = re.compile(r"[ \t\r\n\f\v\u00a0\u200b]+")


@dataclass
class Link:
    id: int
    text: str
    url: str


@dataclass
class Extracted:
    title: str
    text: str
    links: list[Link] = field(default_factory=list)
    date: str | None = None  # published/modified date from meta tags, when the page says


class _Node:
    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag: str, attrs: dict[str, str], parent: "_Node | None"):
        self.tag = tag
        self.attrs = attrs
        self.children: list[_Node | str] = []
        self.parent = parent


class _TreeBuilder(HTMLParser):
    """A forgiving DOM-ish tree: unknown end tags are ignored, unclosed ones closed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {}, None)
        self.cur = self.root
        self.title = ""
        self.metas: dict[str, str] = {}
        self._in_title = False

    def handle_starttag(self, tag: str, attrs_list: list) -> None:
        attrs = {k.lower(): (v or "") for k, v in attrs_list}
        if tag == "meta":
            key = (attrs.get("name") or attrs.get("property") or attrs.get("itemprop") or "").lower()
            if key and "content" in attrs:
                self.metas.setdefault(key, attrs["content"])
        if tag == "title":
            self._in_title = True
        closes = _IMPLIED.get(tag)
        if closes:
            node = self.cur
            # Close the nearest open sibling of the same group, but not across a list/table boundary.
            while node is not self.root and node.tag not in ("ul", "ol", "table", "dl", "tbody", "thead", "select"):
                if node.tag in closes:
                    self.cur = node.parent or self.root
                    break
                node = node.parent  # type: ignore[assignment]
        node = _Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs_list: list) -> None:
        self.handle_starttag(tag, attrs_list)
        if tag not in _VOID and self.cur.tag == tag:
            self.cur = self.cur.parent or self.root

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        node = self.cur
        while node is not self.root:
            if node.tag == tag:
                self.cur = node.parent or self.root
                return
            node = node.parent  # type: ignore[assignment]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        self.cur.children.append(data)


def _hidden(node: _Node) -> bool:
    a = node.attrs
    if "hidden" in a or a.get("aria-hidden") == "true" or a.get("aria-modal") == "true":
        return True
    style = a.get("style", "").replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def _is_boilerplate(node: _Node, in_content: bool) -> bool:
    if node.tag in _DROP or _hidden(node):
        return True
    if node.attrs.get("role", "").lower() in _DROP_ROLES:
        return True
    if node.tag == "header" and not in_content:
        return True  # site header (logo, menu); an article's own header is kept
    ident = node.attrs.get("id", "") + " " + node.attrs.get("class", "")
    if not ident.strip() or node.tag in ("body", "html", "main", "article") or not _BOILERPLATE.search(ident):
        return False
    # A wrapper named e.g. "layout has-sidebar" that holds the article is not boilerplate.
    return not any(n.tag in ("main", "article", "h1") for n in _iter_nodes(node) if n is not node)


def _text_of(node: _Node | str) -> str:
    if isinstance(node, str):
        return node
    if node.tag in ("script", "style", "template"):
        return ""
    return "".join(_text_of(c) for c in node.children)


def _find_main(root: _Node) -> list[_Node]:
    found: list[_Node] = []

    def walk(node: _Node) -> None:
        for child in node.children:
            if isinstance(child, str):
                continue
            if child.tag == "main" or child.attrs.get("role", "").lower() == "main":
                found.append(child)
                return
            if child.tag == "article":
                found.append(child)
                continue
            walk(child)

    walk(root)
    mains = [n for n in found if n.tag == "main" or n.attrs.get("role") == "main"]
    return mains[:1] or found


class _Renderer:
    def __init__(self, base_url: str, number_link: Callable[[str, str], int], main_only: bool):
        self.base_url = base_url
        self.number_link = number_link
        self.main_only = main_only
        self.links: list[Link] = []

    # Blocks are rendered to lists of lines, inline content to strings.
    def block(self, node: _Node, in_content: bool = False) -> list[str]:
        lines: list[str] = []
        inline: list[str] = []

        after_br = False

        def flush(line_break: bool = False) -> None:
            nonlocal after_br
            text = _WS.sub(" ", "".join(inline)).strip()
            inline.clear()
            if text:
                if line_break or after_br:  # <br>: a new line, not a new paragraph
                    if after_br and lines and lines[-1] == "":
                        lines.pop()
                    lines.extend(["", text] if not after_br else [text])
                    if not line_break:
                        lines.append("")
                else:
                    lines.extend(["", text, ""])
            after_br = line_break and bool(text or after_br)

        for child in node.children:
            if isinstance(child, str):
                inline.append(child)
                continue
            if _is_boilerplate(child, in_content):
                continue
            tag = child.tag
            content = in_content or tag in ("main", "article")
            if tag in _HEADINGS:
                flush()
                text = _WS.sub(" ", self.inline(child)).strip()
                if text:
                    lines.extend(["", "#" * _HEADINGS[tag] + " " + text, ""])
            elif tag in ("ul", "ol", "menu"):
                flush()
                items = self.list_block(child, ordered=tag == "ol", depth=0, in_content=content)
                if items and not (self.main_only and self._link_dense(child)):
                    lines.extend(["", *items, ""])
            elif tag == "table":
                flush()
                lines.extend(["", *self.table(child), ""])
            elif tag == "pre":
                flush()
                code = _text_of(child).strip("\n")
                if code.strip():
                    lines.extend(["", "```", *code.splitlines(), "```", ""])
            elif tag == "blockquote":
                flush()
                inner = [ln for ln in self.block(child, content) if ln.strip()]
                lines.extend(["", *("> " + ln for ln in inner), ""])
            elif tag == "hr":
                flush()
                lines.extend(["", "---", ""])
            elif tag == "br":
                flush(line_break=True)
            elif tag in _BLOCK or tag in ("li", "tr", "td", "th", "tbody", "thead"):
                flush()
                sub = self.block(child, content)
                if self.main_only and tag in ("div", "section") and self._link_dense(child):
                    continue
                lines.extend(sub)
            else:
                inline.append(self.inline(child))
        flush()
        return lines

    def _link_dense(self, node: _Node) -> bool:
        """A block that is mostly links (menus, tag clouds, 'related' lists)."""
        total = len(_WS.sub("", _text_of(node)))
        if total == 0:
            return False
        linked = 0
        stack: list[_Node | str] = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, str):
                continue
            if n.tag == "a":
                linked += len(_WS.sub("", _text_of(n)))
            else:
                stack.extend(n.children)
        return linked / total > 0.5

    def inline(self, node: _Node) -> str:
        if _is_boilerplate(node, True) and node.tag not in ("label", "button"):
            return ""
        tag = node.tag
        if tag == "br":
            return "\n"
        if tag == "img":
            alt = _WS.sub(" ", node.attrs.get("alt", "")).strip()
            return f"[image: {alt}]" if alt else ""
        inner = "".join(c if isinstance(c, str) else self.inline(c) for c in node.children)
        if tag == "a":
            return self.link(node, inner)
        if tag == "code" and inner.strip():
            return f"`{inner.strip()}`"
        if tag in ("strong", "b") and inner.strip():
            return f"**{inner.strip()}**"
        if tag in ("em", "i") and inner.strip():
            return f"*{inner.strip()}*"
        if tag in _HEADINGS or tag in _BLOCK or tag in ("li", "td", "th", "tr", "table", "ul", "ol"):
            return " " + inner + " "
        return inner

    def link(self, node: _Node, inner: str) -> str:
        text = _WS.sub(" ", inner).strip()
        href = node.attrs.get("href", "").strip()
        if not href or href.startswith(("#", "javascript:", "mailto:", "tel:")):
            return text
        url = urljoin(self.base_url, href)
        if urlsplit(url).scheme not in ("http", "https", "file"):
            return text
        label = text or node.attrs.get("title", "") or urlsplit(url).path.rsplit("/", 1)[-1] or url
        label = label.replace("】", "]").replace("†", "+")
        link_id = self.number_link(url, label)
        self.links.append(Link(link_id, label, url))
        return f"【{link_id}†{label}】"

    def list_block(self, node: _Node, ordered: bool, depth: int, in_content: bool) -> list[str]:
        lines: list[str] = []
        n = 0
        for child in node.children:
            if isinstance(child, str) or child.tag != "li" or _is_boilerplate(child, in_content):
                continue
            n += 1
            marker = f"{n}." if ordered else "-"
            own: list[str] = []
            nested: list[str] = []
            for sub in child.children:
                if not isinstance(sub, str) and sub.tag in ("ul", "ol"):
                    nested.extend(self.list_block(sub, sub.tag == "ol", depth + 1, in_content))
                elif isinstance(sub, str):
                    own.append(sub)
                elif not _is_boilerplate(sub, in_content):
                    own.append(self.inline(sub))
            text = _WS.sub(" ", "".join(own)).strip()
            if text:
                lines.append("  " * depth + f"{marker} {text}")
            lines.extend(nested)
        return lines

    def table(self, node: _Node) -> list[str]:
        rows: list[list[str]] = []
        header_rows = 0
        caption = next((c for c in node.children if not isinstance(c, str) and c.tag == "caption"), None)
        for tr in self._rows_in_order(node):
            cells = [c for c in tr.children if not isinstance(c, str) and c.tag in ("td", "th")]
            if not cells:
                continue
            texts = [_WS.sub(" ", self.inline(c)).strip().replace("|", "\\|") for c in cells]
            if all(c.tag == "th" for c in cells) and len(rows) == header_rows:
                header_rows += 1
            rows.append(texts)
        if not rows:
            return []
        width = max(len(r) for r in rows)
        rows = [r + [""] * (width - len(r)) for r in rows]
        out = []
        if caption is not None:
            out.append(_WS.sub(" ", self.inline(caption)).strip())
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * width)
        out.extend("| " + " | ".join(r) + " |" for r in rows[1:])
        return out

    def _rows_in_order(self, table: _Node) -> list[_Node]:
        rows: list[_Node] = []

        def walk(n: _Node) -> None:
            for child in n.children:
                if isinstance(child, str):
                    continue
                if child.tag == "tr":
                    rows.append(child)
                elif child.tag in ("thead", "tbody", "tfoot"):
                    walk(child)

        walk(table)
        return rows


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def extract(
    html: str,
    url: str = "",
    *,
    number_link: Callable[[str, str], int] | None = None,
    main_only: bool = False,
) -> Extracted:
    """Turn HTML into text with numbered links.

    `number_link(url, text) -> id` gives each link its citation id (the browser session
    numbers links in its one namespace); without it links are numbered 0, 1, 2 ...
    """
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    root = builder.root
    base = url
    for node in _iter_nodes(root):
        if node.tag == "base" and node.attrs.get("href"):
            base = urljoin(url, node.attrs["href"])
            break
    if number_link is None:
        counter = iter(range(1 << 30))
        number_link = lambda _u, _t: next(counter)  # noqa: E731
    renderer = _Renderer(base, number_link, main_only)
    scope = _find_main(root) if main_only else []
    if scope:
        lines: list[str] = []
        for node in scope:
            lines.extend(renderer.block(node, in_content=True))
    else:
        lines = renderer.block(root)
    title = _WS.sub(" ", builder.title).strip()
    if not title:
        h1 = next((n for n in _iter_nodes(root) if n.tag == "h1"), None)
        title = _WS.sub(" ", _text_of(h1)).strip() if h1 else ""
    metas = builder.metas
    date = next(
        (
            metas[k]
            for k in ("article:published_time", "article:modified_time", "date", "dc.date", "datepublished", "last-modified")
            if metas.get(k)
        ),
        None,
    )
    return Extracted(title=title, text=_tidy(lines), links=renderer.links, date=date)


def _iter_nodes(root: _Node):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in reversed(node.children) if not isinstance(c, str))


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)""", re.I)


def sniff_charset(body: bytes, content_type: str | None = None) -> str:
    """The charset of an HTML document: Content-Type header, BOM, <meta>, else utf-8."""
    if content_type:
        m = re.search(r"charset\s*=\s*[\"']?([\w\-]+)", content_type, re.I)
        if m:
            return m.group(1).lower()
    if body.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    m = _META_CHARSET.search(body[:4096])
    if m:
        name = m.group(1).decode("ascii").lower()
        # What browsers actually decode these labels as (WHATWG encoding standard).
        return {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252"}.get(name, name)
    return "utf-8"


def decode_html(body: bytes, content_type: str | None = None) -> str:
    charset = sniff_charset(body, content_type)
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
