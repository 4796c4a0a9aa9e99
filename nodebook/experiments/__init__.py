"""Each chapter's drivers: the runs, seed loops, sweeps and tables behind its figures.

One module per chapter, named as the chapter (``book/03_mnist.ipynb`` ->
``nodebook.experiments.mnist``). Layers point one way: solvers <- adjoint <-
models <- training <- experiments <- chapters.
"""
