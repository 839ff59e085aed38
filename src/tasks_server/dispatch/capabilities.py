"""What the libcurl this server runs on can do, read once from its version info.

Validation asks here so that an option the build cannot honour is refused
with a 400 at registration, never found out on the first attempt.
"""

from __future__ import annotations

import pycurl

_FEATURES: int = pycurl.version_info()[4]

HTTP3 = bool(_FEATURES & pycurl.VERSION_HTTP3)
NTLM = bool(_FEATURES & pycurl.VERSION_NTLM)
LIBCURL_VERSION: str = pycurl.version_info()[1]
