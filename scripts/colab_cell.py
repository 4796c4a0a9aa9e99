# Google Colab only: fetch the repository (code, checkpoints, results) and install nodebook with what
# the chapters need (its `colab` extra). Elsewhere this cell does nothing.
# A long run survives a runtime reset when its checkpoints live on Google Drive: set the line below
# to True, then after a reset run the chapter again and training resumes from its last epoch or chunk.
KEEP_CHECKPOINTS_ON_DRIVE = False
import os, shutil, subprocess, sys
if "google.colab" in sys.modules:
    repo = "/content/nodebook"
    if not os.path.exists(repo):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/nodebook/nodebook", repo], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", repo + "[colab]"], check=True)
    sys.path.insert(0, repo)
    if KEEP_CHECKPOINTS_ON_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
        checkpoints = os.environ.setdefault("NODEBOOK_CHECKPOINTS", "/content/drive/MyDrive/nodebook/checkpoints")
        os.makedirs(checkpoints, exist_ok=True)
        for name in os.listdir(os.path.join(repo, "checkpoints")):  # the committed ones, so `book` loads them
            if not os.path.exists(os.path.join(checkpoints, name)):
                shutil.copy(os.path.join(repo, "checkpoints", name), checkpoints)
    os.chdir(os.path.join(repo, "book"))
