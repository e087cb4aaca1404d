"""``tinysr serve``: a local web page that enlarges images with the command's own pipeline.

:mod:`tinysr.serve.server` is the HTTP server and its queue; ``static/`` holds the page, its
script and styles (shipped as package data, nothing fetched from the internet).
"""
