"""Subprocess entry for the resume and concurrency tests.

    audit_worker.py SPEC.json OUT                       generate SPEC (JSON) into OUT
    audit_worker.py --after GO SPEC.json OUT            the same, once the file GO exists
    audit_worker.py --report --after GO OUT             rewrite OUT's report, once GO exists

With --after the worker imports everything and prints ``ready <pid>`` first, so several workers
can be released at the same moment. Exit 0 when done; 3, with the message on stderr, when the
folder was in use (RunBusyError).
"""

import json
import os
import sys
import time

from diffkit.audit import report_audit
from diffkit.audit.generate import generate_images
from diffkit.audit.spec import spec_from_dict
from diffkit.errors import RunBusyError

if __name__ == "__main__":
    args = sys.argv[1:]
    report = args[:1] == ["--report"]
    args = args[1:] if report else args
    go = None
    if args[:1] == ["--after"]:
        go, args = args[1], args[2:]
        print(f"ready {os.getpid()}", flush=True)
        while not os.path.exists(go):
            time.sleep(0.002)
    try:
        if report:
            report_audit(args[0], progress=False)
        else:
            spec = spec_from_dict(json.loads(open(args[0]).read()))
            generate_images(spec, args[1], progress=False)
    except RunBusyError as e:
        print(e, file=sys.stderr)
        sys.exit(3)
