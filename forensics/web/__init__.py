"""The console (``forensics web``): sources, live alerts with evidence faces, verdict timelines,
analyst labels and model versions, read from Redis and the model registry only.

Modules: ``app`` (routes, pages), ``api`` (JSON and SSE handlers), ``console`` (shared state and checks),
``access`` (users, roles, sessions, CSRF), ``headers`` (CSP), ``saliency``, ``backends`` (Redis that may
be down), ``feed`` (one Redis reader fanned out to SSE clients), ``overview``, ``listing``,
``timeline``, ``reports`` (what the pages read), ``server`` (bind policy and uvicorn);
``static/`` holds the pages (HTML, CSS, ES modules, a vendored uPlot).
"""
