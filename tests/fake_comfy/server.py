"""Fake of ComfyUI's server.PromptServer: records what nodes send to the browser."""


class PromptServer:
    instance = None

    def __init__(self):
        self.client_id = "fake-client"
        self.last_node_id = None
        self.sent = []            # (event, data, sid)
        self.progress_texts = []  # (text, node_id)

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))

    def send_progress_text(self, text, node_id, sid=None):
        self.progress_texts.append((text, node_id))


PromptServer.instance = PromptServer()
