"""A small local Sphinx extension: the built book requests nothing from the network.

Registered in _config.yml under ``sphinx: local_extensions``. It does two things:

1. Rewrites known remote images to local copies at build time. The notebooks keep the remote
   Colab badge in their first cell (GitHub and Colab users see it there); the book shows
   ``book/_static/colab-badge.svg`` instead. Any other remote image is a build warning, so that
   ``make book`` (-W) fails rather than ship a page that fetches from the network.
2. Drops duplicated inline scripts from each page. Sphinx 7.4 registers an inline script added
   after the builder starts (``app.add_js_file(None, body=...)``, as sphinx-thebe and
   sphinx-togglebutton do) twice, once with filename None and once with "", so ``const
   THEBE_JS_URL`` was declared twice and the browser reported a SyntaxError on every page.
"""

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

# remote image URI -> local file, relative to the book's source folder (a leading "/" in Sphinx)
LOCAL_IMAGES = {
    "https://colab.research.google.com/assets/colab-badge.svg": "/_static/colab-badge.svg",
}


class LocalImages(SphinxTransform):
    """Point remote images at their local copies (before Sphinx collects the images to copy)."""

    default_priority = 400

    def apply(self, **kwargs) -> None:
        for node in self.document.findall(nodes.image):
            uri = node["uri"]
            if uri in LOCAL_IMAGES:
                node["uri"] = LOCAL_IMAGES[uri]
            elif "://" in uri or uri.startswith("//"):
                logger.warning("remote image %s: the book must not fetch it; add a local copy to "
                               "LOCAL_IMAGES in book/_ext/offline_book.py", uri, location=node)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of scripts that differ only by a None/"" filename."""
    scripts, seen = context.get("script_files"), set()
    if not isinstance(scripts, list):
        return
    unique = []
    for script in scripts:
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.add_transform(LocalImages)
    # after every other html-page-context handler (myst-nb adds per-page scripts there)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
