"""``bigfive app``: a local web page to try a model on a clip and read its model card.

A small FastAPI app (FastAPI and uvicorn already come with MLflow, so the page adds no dependency)
serving one static HTML page; see :mod:`bigfive.app.server` for the routes and
:mod:`bigfive.app.main` for the command.
"""
