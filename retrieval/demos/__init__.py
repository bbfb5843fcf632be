"""In-context demonstrations (UDR): pools of a task's training examples, the sources that pick demonstrations for a
query (udr, bm25, random), and training the UDR demonstration retriever with language-model feedback."""

from ._pool import build_demo_pool, list_tasks
from ._sources import DEMO_SOURCES, DemoSource, load_demo_source
from ._train import DemoTrainConfig, train_demos

__all__ = ["DEMO_SOURCES", "DemoSource", "DemoTrainConfig", "build_demo_pool", "list_tasks", "load_demo_source",
           "train_demos"]
