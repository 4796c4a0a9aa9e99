# Google Colab only: fetch the repository (code, checkpoints, results) and install nodebook.
# Elsewhere this cell does nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.exists("/content/nodebook"):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/nodebook/nodebook",
                        "/content/nodebook"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/nodebook"], check=True)
    sys.path.insert(0, "/content/nodebook")
    os.chdir("/content/nodebook/book")
