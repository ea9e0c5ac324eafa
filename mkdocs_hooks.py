"""mkdocs hook: the notebooks stay pages on the two-language site.

mkdocs-static-i18n (1.3) rebuilds every file as a plain mkdocs ``File`` for each language, after
mkdocs-jupyter has marked the notebooks as pages; a plain ``.ipynb`` is not Markdown, so the notebook
would be copied as a static file (its JSON served as ``index.html``), with no Spanish edition and no
language switch (ultrabug/mkdocs-static-i18n#198). This hook makes the files static-i18n creates for
the notebooks mkdocs-jupyter renders documentation pages again, so ``NN_name.es.ipynb`` is the Spanish
page of ``NN_name.ipynb`` (an English notebook without one is used on the Spanish site), and
mkdocs-jupyter renders both.

It also keeps the language switcher's links relative on the two home pages (static-i18n leaves them
as ``/`` and ``/es/``), so the site works from any folder, a sub-path or ``file://``.
"""

from __future__ import annotations

from functools import wraps

from mkdocs.plugins import event_priority


def _is_page() -> bool:
    return True


def on_config(config):
    from mkdocs_static_i18n import suffix

    create = suffix.create_i18n_file
    if getattr(create, "keeps_notebooks", False):  # the Spanish build runs this hook again
        return config

    @wraps(create)
    def create_i18n_file(file, current_language, default_language, all_languages, config):
        i18n_file = create(file, current_language, default_language, all_languages, config)
        jupyter = config.plugins.get("mkdocs-jupyter")
        if jupyter is not None and jupyter.should_include(i18n_file):
            i18n_file.is_documentation_page = _is_page
        return i18n_file

    create_i18n_file.keeps_notebooks = True
    suffix.create_i18n_file = create_i18n_file
    return config


@event_priority(-100)  # after static-i18n has set the switcher's links for this page
def on_page_context(context, page, config, nav):
    # static-i18n sets them as an attribute of config.extra (which the template reads first), or as its item
    alternates = getattr(config.extra, "alternate", None) or config.extra.get("alternate") or []
    for alternate in alternates:
        link = alternate.get("link", "")
        if link.startswith("/") and not link.startswith("//"):
            alternate["link"] = link.lstrip("/")  # relative to the site's root: Material's `url` filter
    return context
