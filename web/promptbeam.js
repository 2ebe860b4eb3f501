// Prompt Beam editor extension: a model picker on the PromptBeamOllama node, and the run viewer links.
//
// The node's `model` input stays a plain STRING, so a workflow queued through the API never fails validation
// because this server's Ollama has other models. The picker only helps fill the text in: it asks the pack's route
// GET /promptbeam/ollama/models for the models installed at the node's base_url and lists them in a menu.
// Nothing of the picker is saved: the workflow file and the API prompt stay exactly as without this extension.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "PromptBeamOllama";
const PICKER_LABEL = "choose Ollama model…";
const TITLE_BUTTON = "promptbeam_choose_ollama_model";
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

// The menu is placed by a pointer event (LiteGraph's ContextMenu wants one). From the title button there is none at
// hand, so one is made at the right end of the node's title bar.
function pointerAt(node) {
  const canvas = app.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] - 20, node.pos[1]]);
  return new MouseEvent("click", { clientX: rect.left + x, clientY: rect.top + y });
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
  new LiteGraph.ContextMenu(entries, {
    event: event instanceof MouseEvent ? event : pointerAt(node),
    title: escapeHtml(`Ollama models at ${where}`),
    className: "dark promptbeam-ollama-models",
    scale: Math.max(1, app.canvas.ds.scale),
  });
}

app.registerExtension({
  name: "promptbeam.ollamaModels",
  // The picker is reached from the node's title bar (an icon) and its right-click menu, never from a widget row:
  // an extra widget would make every saved PromptBeamOllama node grow taller when a workflow is opened (the editor
  // resizes nodes to fit their widgets), so opening and re-saving a workflow would change it.
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = getExtraMenuOptions?.apply(this, arguments);
      options.unshift(
        { content: PICKER_LABEL, callback: (_value, _options, event) => chooseModel(this, event) },
        null,
      );
      return result;
    };
    const onTitleButtonClick = nodeType.prototype.onTitleButtonClick;
    nodeType.prototype.onTitleButtonClick = function (button, canvas) {
      if (button.name === TITLE_BUTTON) chooseModel(this, null);
      else onTitleButtonClick?.call(this, button, canvas);
    };
  },
  nodeCreated(node) {
    if (node.comfyClass !== NODE_TYPE) return;
    // Title buttons are drawn in the PrimeIcons font; \ue967 is pi-list. Older frontends have no title buttons.
    node.addTitleButton?.({ name: TITLE_BUTTON, text: "\ue967", fontSize: 16, xOffset: -10, yOffset: 0 });
  },
});

// ---- Run viewer ----------------------------------------------------------------------------------------------------
// The Prompt Beam Search node tells this client where its run's page is (event "promptbeam.run", sent once the run
// directory exists); the node then shows an "open run viewer" button. The list of all runs is in the editor's menu
// (Extensions › Prompt Beam) and the node's right-click menu. The pages are served by the pack's routes
// (nodes/run_routes.py) and opened in a new tab.
const SEARCH_NODE_TYPE = "PromptBeamSearch";
const RUN_EVENT = "promptbeam.run";
const RUNS_ROUTE = "/promptbeam/runs";
const VIEWER_BUTTON = "open run viewer";

function openPage(route) {
  window.open(api.apiURL(route), "_blank", "noopener");
}

function showRunButton(node, run) {
  node.promptbeamRun = run;
  let button = node.widgets?.find((w) => w.promptbeamViewer);
  if (!button) {
    button = node.addWidget("button", VIEWER_BUTTON, null, () => openPage(node.promptbeamRun.url));
    button.promptbeamViewer = true;
    // A runtime-only control: never part of the saved workflow or the queued prompt.
    button.serialize = false;
    button.options = { ...(button.options || {}), serialize: false };
    node.setSize?.([node.size[0], node.computeSize()[1]]);
  }
  button.label = `${VIEWER_BUTTON}: ${run.run_id}`;
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "promptbeam.runViewer",
  commands: [
    { id: "promptbeam.openRuns", label: "Prompt Beam runs", icon: "pi pi-images", function: () => openPage(RUNS_ROUTE) },
  ],
  menuCommands: [{ path: ["Extensions", "Prompt Beam"], commands: ["promptbeam.openRuns"] }],
  setup() {
    api.addEventListener(RUN_EVENT, ({ detail }) => {
      const node = app.graph?.getNodeById(detail?.node);
      if (node && node.comfyClass === SEARCH_NODE_TYPE && detail.url) showRunButton(node, detail);
    });
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== SEARCH_NODE_TYPE) return;
    const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = getExtraMenuOptions?.apply(this, arguments);
      const entries = [{ content: "Prompt Beam runs", callback: () => openPage(RUNS_ROUTE) }];
      if (this.promptbeamRun) {
        entries.unshift({ content: `${VIEWER_BUTTON} (${escapeHtml(this.promptbeamRun.run_id)})`,
                          callback: () => openPage(this.promptbeamRun.url) });
      }
      options.unshift(...entries, null);
      return result;
    };
  },
});
