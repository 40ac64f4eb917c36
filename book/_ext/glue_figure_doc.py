"""{glue:figure} with a :doc: option: a numbered, captioned figure pasted from another notebook.

myst-nb 1.x pastes across documents only with {glue:any} and its :doc: option, which gives no
caption and no figure number. A chapter page shows the figures its notebook glued, so this local
extension lets {glue:figure} take :doc: too: it wraps myst-nb's cross-document glue reference in
a figure node with the directive's caption and :name:, which numfig then numbers.
"""
from docutils import nodes
from docutils.parsers.rst import directives
from myst_nb.ext.glue.directives import PasteFigureDirective
from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref, glue_warning


class PasteFigureFromDoc(PasteFigureDirective):
    option_spec = {**PasteFigureDirective.option_spec, "doc": directives.unchanged}

    def run(self):
        if "doc" not in self.options:
            return super().run()
        try:
            ref = create_pending_glue_ref(self.document, self.source, self.line,
                                          self.options.pop("doc"), self.arguments[0])
        except PendingGlueReferenceError as exc:
            return [glue_warning(str(exc), self.document, self.line)]
        figure_node = nodes.figure("", ref)
        self.set_source_info(figure_node)
        self.add_name(figure_node)
        if self.content:
            node = nodes.Element()
            self.state.nested_parse(self.content, self.content_offset, node)
            first = node[0]
            if isinstance(first, nodes.paragraph):
                caption = nodes.caption(first.rawsource, "", *first.children)
                caption.source, caption.line = first.source, first.line
                figure_node += caption
            if len(node) > 1:
                figure_node += nodes.legend("", *node[1:])
        return [figure_node]


def setup(app):
    app.setup_extension("myst_nb")
    app.add_directive_to_domain("glue", "figure", PasteFigureFromDoc, override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
