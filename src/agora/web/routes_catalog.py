"""The model catalog in the web UI: a searchable grid of cards and one page per entry.

Search and filters run in the database (the same service call as GET /api/v1/catalog). An
entry's Markdown description is rendered here with raw HTML disabled, so a document cannot put
markup or scripts on the page; "Try it" and "Deploy" lead to pages of their own and show only
for entries that run here.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import Response

from agora.services import catalog
from agora.services.catalog import CatalogQuery
from agora.web.guards import PageCtx, mark_web
from agora.web.render import render

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web)])
EntryName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Label = Annotated[str, Query(max_length=64)]
PER_PAGE = 24
LINK_TITLES = {
    "source": "Source code",
    "documentation": "Documentation",
    "dataset": "Dataset",
    "weights": "Weights",
    "citation": "Citation",
    "doi": "DOI",
    "base_model": "Base model",
    "docker_image": "Docker image",
}


def markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML off: tags in the text come out escaped, and markdown-it
    refuses javascript:, vbscript: and data: links."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(md.render(text))  # noqa: S704 - html is off: markdown-it escapes the input


@router.get("/catalog")
def catalog_page(
    request: Request,
    ctx: PageCtx,
    q: Annotated[str, Query(max_length=200)] = "",
    tag: Label = "",
    task: Label = "",
    data_type: Label = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    query = CatalogQuery(
        q, tag or None, task or None, data_type or None, page=page, per_page=PER_PAGE
    )
    result = catalog.search(ctx, query)
    filters = {"q": q, "tag": tag, "task": task, "data_type": data_type}
    kept = {k: v for k, v in filters.items() if v}

    def page_url(n: int) -> str:
        return "/catalog?" + urlencode({**kept, "page": n})

    return render(
        request,
        ctx,
        "catalog.html",
        result=result,
        facets=catalog.facets(ctx),
        filters=filters,
        filtered=bool(kept),
        page_url=page_url,
    )


@router.get("/catalog/{name}")
def module_page(request: Request, ctx: PageCtx, name: EntryName) -> Response:
    module = catalog.get_module(ctx, name)
    return render(
        request,
        ctx,
        "catalog_module.html",
        module=module,
        run=catalog.run_spec(module),
        description=markdown(module.description),
        link_titles=LINK_TITLES,
    )
