import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("paircap_caption_metrics.py")
launch_gradio_widget(module)
