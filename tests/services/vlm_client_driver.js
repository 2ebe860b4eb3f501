// Drives the seed's own LocalVLMProvider (src/providers/local-vlm-provider.js, loaded from its repository by
// test_vlm_service_js.py) against a running `python -m pipeline.services.vlm`, and writes what the client got.
//
//   node vlm_client_driver.js PROVIDER_JS API_URL SCENARIO INPUT_JSON OUTPUT_JSON
//
// INPUT_JSON: {prompt, candidates: [{candidateId, localPath}], outside: "/a/path/outside/the/allowed/folders"}.
// SCENARIO "session": the calls the orchestrator makes in VLM mode, plus the client's other comparisons;
// "biased": ensembles only (the fake model is position-biased).
'use strict';

const fs = require('fs');

const [providerPath, apiUrl, scenario, inputPath, outputPath] = process.argv.slice(2);
const { prompt, candidates, outside } = JSON.parse(fs.readFileSync(inputPath, 'utf8'));
const LocalVLMProvider = require(providerPath);

async function failure(call) {
  try {
    await call();
    return null;
  } catch (error) {
    return { message: error.message, status: error.response?.status, detail: error.response?.data?.detail };
  }
}

async function session(provider) {
  const [first, second, third] = candidates.map(c => c.localPath);
  const out = {};
  out.health = await provider.healthCheck();
  out.load = await provider.loadModel({ withRetry: false });
  out.compare = await provider.compareImages(first, third, prompt);
  out.debiased = [];
  for (let i = 0; i < 4; i++) out.debiased.push(await provider.compareWithDebiasing(first, second, prompt));
  out.ensemble = await provider.compareWithEnsemble(first, second, prompt, { ensembleSize: 3 });
  // this one takes the candidates themselves (it reads their localPath)
  out.separate = await provider.compareWithEnsembleSeparate(candidates[0], candidates[2], prompt, { ensembleSize: 2 });
  out.ranking = await provider.rankImages(candidates, prompt, { ensembleSize: 3 });
  out.outside = await failure(() => provider.compareImages(outside, first, prompt));
  out.unload = await provider.unloadModel();
  return out;
}

async function biased(provider) {
  const [first, second] = candidates.map(c => c.localPath);
  const ensembles = [];
  for (let i = 0; i < 3; i++) {
    ensembles.push(await provider.compareWithEnsemble(first, second, prompt, { ensembleSize: 3 }));
  }
  return { ensembles };
}

(async () => {
  const provider = new LocalVLMProvider({ apiUrl, timeout: 60000 });
  const result = await (scenario === 'biased' ? biased(provider) : session(provider));
  fs.writeFileSync(outputPath, JSON.stringify(result));
})().catch(error => {
  console.error(error.stack || String(error));
  process.exit(1);
});
