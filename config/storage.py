"""Static files in production: WhiteNoise's compressed files with hashed names.

The chat page's scripts are ES modules that import each other (`./socket.js`): with
`support_js_module_import_aggregation` the manifest rewrites those imports to the
hashed names too, so every file of a release is cached forever and a browser never
mixes one release's app.js with another's modules.
"""
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
