"""Analysis views created in the catalog, so plain SQL users get the same figures as the CLI."""

ANALYSIS_VIEWS: list[str] = []
