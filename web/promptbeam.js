// Prompt Beam editor extension: a model picker on the PromptBeamOllama node.
//
// The node's `model` input stays a plain STRING, so a workflow queued through the API never fails validation
// because this server's Ollama has other models. The button only helps fill the text in: it asks the pack's route
// GET /promptbeam/ollama/models for the models installed at the node's base_url and lists them in a menu.
// The button is not part of the workflow: it is left out of both the saved widgets_values and the API prompt.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "PromptBeamOllama";
const BUTTON_LABEL = "choose Ollama model…";
const MODELS_ROUTE = "/promptbeam/ollama/models";

function escapeHtml(text) {
  // LiteGraph menus render entries and titles as HTML; model names and URLs come from outside.
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function notify(severity, summary, detail) {
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity, summary, detail, life: 5000 });
  else alert(`${summary}\n${detail}`);
}

async function fetchModels(baseUrl) {
  const query = baseUrl ? `?base_url=${encodeURIComponent(baseUrl)}` : "";
  try {
    const response = await api.fetchApi(MODELS_ROUTE + query);
    if (!response.ok) {
      return { models: [], error: `ComfyUI answered HTTP ${response.status} for ${MODELS_ROUTE}; is Prompt Beam installed on this server?` };
    }
    return await response.json();
  } catch (error) {
    return { models: [], error: `Could not ask ComfyUI for the Ollama models: ${error}` };
  }
}

// Where the menu opens when no pointer event is at hand (e.g. the callback was called from code): under the node's title.
function menuPositionFor(node) {
  const canvas = app.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
  return { left: rect.left + x, top: rect.top + y };
}

async function chooseModel(node, event) {
  const baseUrlWidget = node.widgets?.find((w) => w.name === "base_url");
  const modelWidget = node.widgets?.find((w) => w.name === "model");
  if (!modelWidget) return;
  const baseUrl = String(baseUrlWidget?.value ?? "").trim();
  const answer = await fetchModels(baseUrl);
  const where = answer.base_url || baseUrl || "OLLAMA_BASE_URL";
  if (answer.error) {
    notify("error", "Ollama models unavailable", answer.error);
    return;
  }
  if (!answer.models?.length) {
    notify("warn", "No Ollama models installed", `Ollama at ${where} has no models; install one with \`ollama pull <model>\`.`);
    return;
  }
  const pick = (name) => {
    const canvas = app.canvas;
    if (modelWidget.setValue) modelWidget.setValue(name, { e: event, node, canvas });
    else modelWidget.value = name;
    node.setDirtyCanvas(true, true);
  };
  const entries = answer.models.map((name) => ({
    content: escapeHtml(name) + (name === modelWidget.value ? " ✓" : ""),
    callback: () => pick(name),
  }));
  const position = event instanceof MouseEvent ? { event } : menuPositionFor(node);
  new LiteGraph.ContextMenu(entries, {
    ...position,
    title: escapeHtml(`Ollama models at ${where}`),
    className: "dark promptbeam-ollama-models",
    scale: Math.max(1, app.canvas.ds.scale),
  });
}

app.registerExtension({
  name: "promptbeam.ollamaModels",
  nodeCreated(node) {
    if (node.comfyClass !== NODE_TYPE) return;
    // Added last, after every input widget, so skipping it leaves no hole in widgets_values.
    const button = node.addWidget("button", BUTTON_LABEL, null, (_widget, _canvas, _node, _pos, event) => {
      chooseModel(node, event);
    }, { serialize: false });   // options.serialize=false: left out of the API prompt (graphToPrompt)
    button.serialize = false;    // widget.serialize=false: left out of the saved workflow's widgets_values
  },
});
