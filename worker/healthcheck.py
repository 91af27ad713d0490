"""Container healthcheck: healthy only once this worker holds its slice (not merely listening)."""
import os
import sys
import urllib.request

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{os.environ.get('PORT', '5100')}/healthz", timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:  # unreachable, 503 (HTTPError) or slow: all mean "not healthy yet"
    sys.exit(1)
