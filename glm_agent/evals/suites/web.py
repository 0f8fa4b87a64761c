"""`web`: a small local shop driven through the browser tool (WebShop-style, offline).

The suite serves a synthetic catalogue (`data/web_products.json`: name, category, colour,
material, price, rating) on 127.0.0.1 with the standard library's HTTP server in a thread:
a search page with filter and sort links, product pages, and a "Buy now" link per product.
Each sample shops under its own path prefix `/s/<token>/`, so concurrent samples never see
each other's orders; the shop records every purchase. The agent uses the project's
`simple_browser` tool (`open_url` the search page, follow link ids) and its `search` action
is answered from the same catalogue.

Reward (as WebShop: attribute, price and goal match, in [0, 1]): the share of the task's
constraints (category, colour, material, max price, min rating) the first bought product meets,
plus one point for being the right product (the cheapest / highest rated match).
"""

from __future__ import annotations

import html
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

from glm_agent.core.messages import ToolCall
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, read_json, read_jsonl

__all__ = ["WebSuite", "Shop", "ShopServer", "ShopSearchProvider", "load_web_tasks", "reward", "search_products"]

SYSTEM = (
    "You are a shopping assistant using a web browser: the `simple_browser` tool (the only tool). "
    "The shop's pages are plain HTML: open a URL with the `open_url` action, and follow a link by "
    "passing its id (shown as 【id†text】) to `open_url` as the url. To buy a product, open its product page and then its "
    "'Buy now' link. Buy exactly one product. When the order is confirmed, reply with the name "
    "and price of what you bought."
)


# -- catalogue and search ----------------------------------------------------------------------
def _words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        out.append(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def search_products(products: list[dict], query: str = "", *, color: str = "", material: str = "",
                    category: str = "", max_price: float | None = None, sort: str = "") -> list[dict]:
    """Products whose text holds every query word (plurals folded), filtered and sorted."""
    words = [w for w in _words(query) if w not in {"a", "an", "the", "for", "with", "and", "of", "under"}]
    hits = []
    for p in products:
        text = set(_words(f"{p['name']} {p['category']} {p['color']} {p['material']}"))
        if any(w not in text for w in words):
            continue
        if color and p["color"] != color.lower():
            continue
        if material and p["material"] != material.lower():
            continue
        if category and p["category"] != category.lower():
            continue
        if max_price is not None and p["price"] > max_price:
            continue
        hits.append(p)
    if sort == "price_asc":
        hits.sort(key=lambda p: (p["price"], p["id"]))
    elif sort == "price_desc":
        hits.sort(key=lambda p: (-p["price"], p["id"]))
    elif sort == "rating":
        hits.sort(key=lambda p: (-p["rating"], p["id"]))
    return hits


class Shop:
    """The catalogue and the orders placed in each session."""

    def __init__(self, products: list[dict]):
        self.products = products
        self.by_id = {int(p["id"]): p for p in products}
        self.orders: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def buy(self, token: str, product_id: int) -> dict:
        product = self.by_id[product_id]
        with self._lock:
            self.orders.setdefault(token, []).append(dict(product))
        return product

    def purchases(self, token: str) -> list[dict]:
        with self._lock:
            return list(self.orders.get(token, []))


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    ).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    shop: Shop  # set on the subclass the server builds

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        m = re.match(r"^/s/([A-Za-z0-9_-]+)(/.*)?$", parts.path)
        if not m:
            self._send(404, _page("Not found", "<p>Shop pages live under /s/&lt;session&gt;/.</p>"))
            return
        token, rest = m.group(1), m.group(2) or "/"
        base = f"/s/{token}"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            if rest in ("/", ""):
                self._send(200, self._home(base))
            elif rest == "/search":
                self._send(200, self._search(base, query))
            elif (pm := re.match(r"^/product/(\d+)$", rest)) and int(pm.group(1)) in self.shop.by_id:
                self._send(200, self._product(base, self.shop.by_id[int(pm.group(1))]))
            elif (bm := re.match(r"^/buy/(\d+)$", rest)) and int(bm.group(1)) in self.shop.by_id:
                p = self.shop.buy(token, int(bm.group(1)))
                self._send(200, _page("Order confirmed", f"<p>You bought <b>{html.escape(p['name'])}</b> "
                                      f"for ${p['price']:.2f}. Order number {len(self.shop.purchases(token))}.</p>"))
            else:
                self._send(404, _page("Not found", f"<p>No page here. <a href='{base}/'>Shop home</a></p>"))
        except ValueError:
            self._send(400, _page("Bad request", "<p>Check the URL parameters.</p>"))

    def _home(self, base: str) -> bytes:
        cats = sorted({p["category"] for p in self.shop.products})
        links = "".join(f"<li><a href='{base}/search?q={quote_plus(c)}'>{html.escape(c)}</a></li>" for c in cats)
        return _page("Woolly Goods shop", f"<p>Search: {base}/search?q=WORDS (filters: color, material, max_price; "
                     f"sort=price_asc|price_desc|rating)</p><h2>Categories</h2><ul>{links}</ul>")

    def _search(self, base: str, q: dict[str, str]) -> bytes:
        max_price = float(q["max_price"]) if q.get("max_price") else None
        hits = search_products(self.shop.products, q.get("q", ""), color=q.get("color", ""),
                               material=q.get("material", ""), category=q.get("category", ""),
                               max_price=max_price, sort=q.get("sort", ""))

        def link(label: str, **change: str) -> str:
            params = {**q, **change}
            params = {k: v for k, v in params.items() if v}
            return f"<a href='{base}/search?{urlencode(params)}'>{html.escape(label)}</a>"

        sorts = " | ".join([link("cheapest first", sort="price_asc"), link("most expensive first", sort="price_desc"),
                            link("best rated first", sort="rating")])
        colors = " ".join(link(c, color=c) for c in sorted({p["color"] for p in hits}))
        materials = " ".join(link(m, material=m) for m in sorted({p["material"] for p in hits}))
        rows = "".join(
            f"<li><a href='{base}/product/{p['id']}'>{html.escape(p['name'])}</a> (${p['price']:.2f}, "
            f"rating {p['rating']:.1f})</li>"
            for p in hits[:50]
        )
        shown = "" if len(hits) <= 50 else f"<p>Showing 50 of {len(hits)}; narrow the search.</p>"
        body = (f"<p>{len(hits)} result(s) for '{html.escape(q.get('q', ''))}'.</p><p>Sort: {sorts}</p>"
                f"<p>Colour: {colors or '-'}</p><p>Material: {materials or '-'}</p><ul>{rows}</ul>{shown}")
        return _page("Search results", body)

    def _product(self, base: str, p: dict) -> bytes:
        body = (
            f"<table><tr><td>Category</td><td>{html.escape(p['category'])}</td></tr>"
            f"<tr><td>Colour</td><td>{html.escape(p['color'])}</td></tr>"
            f"<tr><td>Material</td><td>{html.escape(p['material'])}</td></tr>"
            f"<tr><td>Price</td><td>${p['price']:.2f}</td></tr>"
            f"<tr><td>Rating</td><td>{p['rating']:.1f} / 5</td></tr></table>"
            f"<p><a href='{base}/buy/{p['id']}'>Buy now</a></p><p><a href='{base}/search?q={quote_plus(p['category'])}'>"
            f"Back to {html.escape(p['category'])}</a></p>"
        )
        return _page(p["name"], body)


class ShopServer:
    """The shop on 127.0.0.1 (free port) in a daemon thread; `stop()` shuts it down."""

    def __init__(self, shop: Shop, host: str = "127.0.0.1", port: int = 0):
        handler = type("ShopHandler", (_Handler,), {"shop": shop})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="eval-shop", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class ShopSearchProvider:
    """The browser's `search` action answered from the shop (no traffic leaves the machine)."""

    name = "shop"

    def __init__(self, shop: Shop, base_url: str):
        self.shop = shop
        self.base_url = base_url.rstrip("/")

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[Any]:
        from glm_agent.tools.browser.search import SearchResult

        hits = search_products(self.shop.products, query)
        return [
            SearchResult(title=p["name"], url=f"{self.base_url}/product/{p['id']}",
                         snippet=f"{p['category']}, {p['color']}, {p['material']}, ${p['price']:.2f}, rating {p['rating']:.1f}")
            for p in hits[:count]
        ]

    async def aclose(self) -> None:
        return None


# -- tasks and reward --------------------------------------------------------------------------
_CONSTRAINTS = ("category", "color", "material", "max_price", "min_rating")


def load_web_tasks(path: str | Path, products: dict[int, dict]) -> list[Sample]:
    path = Path(path)
    samples = []
    for lineno, obj in read_jsonl(path):
        for key in ("id", "instruction", "constraints", "goal", "gold_ids"):
            if key not in obj:
                raise TaskFileError(path, lineno, f"missing field {key!r}")
        unknown = set(obj["constraints"]) - set(_CONSTRAINTS)
        if unknown:
            raise TaskFileError(path, lineno, f"unknown constraint(s) {sorted(unknown)}; known: {_CONSTRAINTS}")
        if obj["goal"] not in ("cheapest", "highest_rated", "any"):
            raise TaskFileError(path, lineno, "goal must be cheapest, highest_rated or any")
        missing = [g for g in obj["gold_ids"] if int(g) not in products]
        if missing or not obj["gold_ids"]:
            raise TaskFileError(path, lineno, f"gold_ids {missing or '[]'} not in the catalogue")
        samples.append(Sample(id=str(obj["id"]), prompt=obj["instruction"], category=obj["goal"],
                              gold=obj, source=f"{path}:{lineno}"))
    return samples


def reward(product: dict | None, task: dict) -> tuple[float, list[str]]:
    """(reward in [0, 1], the unmet requirements) for the product bought."""
    if product is None:
        return 0.0, ["nothing was bought"]
    c = task["constraints"]
    unmet = []
    for key in ("category", "color", "material"):
        if key in c and product[key] != c[key]:
            unmet.append(f"{key} {product[key]!r} != {c[key]!r}")
    if "max_price" in c and product["price"] > c["max_price"]:
        unmet.append(f"price {product['price']} > {c['max_price']}")
    if "min_rating" in c and product["rating"] < c["min_rating"]:
        unmet.append(f"rating {product['rating']} < {c['min_rating']}")
    total = len(c) + (1 if task["goal"] != "any" else 0)
    if task["goal"] != "any" and int(product["id"]) not in {int(g) for g in task["gold_ids"]}:
        unmet.append(f"not the {task['goal'].replace('_', ' ')} match (gold {task['gold_ids']})")
    return (total - len(unmet)) / total, unmet


class WebSuite(Suite):
    name = "web"
    description = "a local shop website driven through the browser tool (WebShop-style)"
    metric = "mean reward"
    max_steps = 10
    sample_timeout = 300.0

    def __init__(self, data: str | Path | None = None, **options: Any):
        super().__init__(data, **options)
        self.shop: Shop | None = None
        self.server: ShopServer | None = None
        self.chromium: Any = None

    def _catalogue(self) -> list[dict]:
        custom = self.options.get("products")
        if custom:
            return read_json(custom)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "web_products.json") as path:
            return read_json(path)

    def load(self) -> list[Sample]:
        products = {int(p["id"]): p for p in self._catalogue()}
        if self.data:
            return load_web_tasks(self.data, products)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "web.jsonl") as path:
            return load_web_tasks(path, products)

    async def start(self) -> None:
        if self.server is None:
            self.shop = Shop(self._catalogue())
            self.server = ShopServer(self.shop)
        if self.chromium is None:
            from glm_agent.tools.browser import ChromiumProcess

            self.chromium = ChromiumProcess()  # one browser for all samples; a context each

    async def aclose(self) -> None:
        if self.chromium is not None:
            await self.chromium.aclose()
            self.chromium = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _base(self, token: str) -> str:
        assert self.server is not None, "WebSuite.start() was not called"
        return f"{self.server.base}/s/{token}"

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        from glm_agent.tools.browser import BrowserTool

        await self.start()
        token = secrets.token_hex(6)
        base = self._base(token)
        tool = BrowserTool(
            ShopSearchProvider(self.shop, base),
            allow=[f"127.0.0.1:{self.server.port}"],
            browser=self.chromium,
            nav_timeout=15.0,
        )
        prompt = (f"{sample.prompt}\n\nThe shop is at {base}/ . Search it by opening {base}/search?q=<words> "
                  f"(optional parameters: color, material, max_price, sort=price_asc|price_desc|rating), "
                  f"for example {base}/search?q=hat&color=blue&sort=price_asc .")
        return SampleEnv(tools=[tool], system=SYSTEM, prompt=prompt, max_steps=self.max_steps,
                         state={"token": token, "base": base})

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        bought = self.shop.purchases(env.state["token"]) if self.shop else []
        first = bought[0] if bought else None
        score, unmet = reward(first, sample.gold)
        detail = "bought " + (f"{first['name']} (#{first['id']}, ${first['price']})" if first else "nothing")
        if unmet:
            detail += "; unmet: " + "; ".join(unmet)
        if len(bought) > 1:
            detail += f"; {len(bought)} purchases (only the first counts)"
        return Judgement(score, detail=detail, info={"bought": [p["id"] for p in bought]})

    def oracle(self, sample: Sample) -> list[Any]:
        gold = sample.gold
        c = gold["constraints"]
        params = {"q": c.get("category", "")}
        for key in ("color", "material", "max_price"):
            if key in c:
                params[key] = str(c[key])
        params["sort"] = "rating" if gold["goal"] == "highest_rated" else "price_asc"
        target = int(gold["gold_ids"][0])

        def browse(path_fn: Any) -> Any:
            def turn(messages: list[Any]) -> ToolCall:
                base = _base_from(messages)
                return ToolCall(name="simple_browser", arguments={"action": "open_url", "url": path_fn(base)})
            return turn

        def confirm(messages: list[Any]) -> str:
            obs = messages[-1].content if messages else ""
            return "Done: " + (obs.strip().splitlines()[-1] if obs.strip() else "ordered")

        return [
            browse(lambda base: f"{base}/search?{urlencode(params)}"),
            browse(lambda base: f"{base}/product/{target}"),
            browse(lambda base: f"{base}/buy/{target}"),
            confirm,
        ]


def _base_from(messages: list[Any]) -> str:
    """The shop base URL named in the task prompt (the oracle learns it like an agent would)."""
    for m in messages:
        if getattr(m, "role", "") == "user":
            found = re.search(r"(http://127\.0\.0\.1:\d+/s/[A-Za-z0-9_-]+)/", m.content)
            if found:
                return found.group(1)
    raise ValueError("no shop URL in the prompt")

