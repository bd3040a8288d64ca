"""Pages for people: the published pipeline, upcoming public lines, anchors and impact, as HTML.

Read-only and server-rendered (Jinja2, charts drawn as inline SVG on the server, no script),
served by the gateway at ``/``, ``/pipeline``, ``/pipeline/lines``, ``/anchors``, ``/impact``. They read
through the demand and enterprises services' public API, signed as one principal with the
rights every caller has (``reader.PAGES_PRINCIPAL``), so they can show only what the API
shows anyone: never an ``aggregate_only`` line, pipeline figures exactly as published, and the
impact report only in its shareable version.

- ``reader``: the upstream calls and their caches (the pipeline revalidated by ETag).
- ``figures``: pure rules of presentation: the quarter window, filters, line sorts, money in words.
- ``charts``: the geometry of the bar charts and the heat map.
- ``rendering``: templates, security headers (the CSP), ETag/304, downloads' headers, error pages.
- ``admission``: the rate limit and key of every page, the shared reader, upstream failures as pages.
- ``pipeline_pages``, ``line_pages``, ``anchor_pages``, ``impact_pages``: the routes, one module per subject.
- ``routes``: the router (the routes in order, behind ``admitted``) and ``install(app)``.
"""
