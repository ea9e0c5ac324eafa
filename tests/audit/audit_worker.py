"""Subprocess entry for the resume test: generate a spec (JSON) into a folder."""

import json
import sys

from diffkit.audit.generate import generate_images
from diffkit.audit.spec import spec_from_dict

if __name__ == "__main__":
    spec = spec_from_dict(json.loads(open(sys.argv[1]).read()))
    generate_images(spec, sys.argv[2], progress=False)
