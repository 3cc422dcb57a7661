"""The HTML page of ``biotrove report`` (page.py) and its inline SVG charts (svg.py)."""
