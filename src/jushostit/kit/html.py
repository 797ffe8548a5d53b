"""Server-rendered HTML: Jinja templates shipped in a package's `templates/` folder, every value escaped, sent
with headers that let a page do nothing but show itself (no script, nothing loaded from elsewhere, never framed,
never cached, no Referer sent on)."""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}


def templates(package: str) -> Environment:
    """The templates of `package` (its `templates/` folder), autoescaped."""
    return Environment(loader=PackageLoader(package, "templates"), autoescape=select_autoescape())


def html_response(html: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
