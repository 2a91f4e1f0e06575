"""The build step every bench/ script starts with: configure BUILD_DIR (Release unless told
otherwise; options already cached there, e.g. -DPGW_SYSTEM_CURL=ON, are kept) and build the
given targets, quietly. Raises CalledProcessError if either fails."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(build_dir, targets, build_type="Release", jobs=None):
    subprocess.run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=" + build_type],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build_dir, "-j%d" % (jobs or os.cpu_count()),
                    "--target", *targets], check=True, stdout=subprocess.DEVNULL)
