"""The dashboard: the daemon, its queue and every transcript in the browser.

`server` starts it (`spkd web`, or the child `spkd run` supervises) and imports only
the standard library; `app` is the Starlette application, `pages` what its pages
show, `security` the token, CSRF and headers, `upload` files into the inbox,
`metrics` /metrics, `seams` the features other rooms own (search, voices, renaming).
Templates and static files ship in the package (daemon/web/templates, static).
"""
