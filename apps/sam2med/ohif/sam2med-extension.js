// sam2med OHIF extension: a panel that sends the segmentation painted in OHIF as the seed of a SAM2
// propagation, paints the 3D result back, keeps corrections as conditioning slices, and saves a DICOM-SEG.
// Plain ES module, loaded at run time by the OHIF that MONAI Label bundles (no build step). The panel is
// plain DOM inside one React element; React itself is the bundle's own copy (see findReact).
import { Grid, decodeNrrd, encodeNrrd, forEachVoxel, gridOfPlanes, pixelMapping, planeOf, sliceOf } from './sam2med-geometry.js';

const EXTENSION_ID = 'sam2med';
const AXES = ['axial', 'coronal', 'sagittal'];
const AXIS_INDEX = { sagittal: 0, coronal: 1, axial: 2 };
const BUTTON = 'padding:1px 10px;border:1px solid #5acce6;border-radius:4px;color:#5acce6;margin-right:4px';
const LOW_CONFIDENCE = 0.5;  // predicted IoU below this marks a slice to check

/** The bundle's React, through webpack's chunk loader (the prebuilt OHIF exposes no global React). */
function findReact() {
  let require = null;
  (self.webpackChunk = self.webpackChunk || []).push([[`sam2med-${Date.now()}`], {}, (r) => { require = r; }]);
  if (!require) throw new Error('sam2med: webpack runtime not found in this OHIF build');
  for (const id of Object.keys(require.m)) {
    const source = String(require.m[id]);
    if (source.includes('exports.useState=') && source.includes('exports.createElement=')) return require(id);
  }
  throw new Error('sam2med: React not found in this OHIF build');
}

class Sam2medController {
  constructor({ servicesManager, commandsManager, extensionManager }) {
    this.services = servicesManager.services;
    this.commandsManager = commandsManager;
    this.extensionManager = extensionManager;
    this.state = { start: '', end: '', auto: false, axis: 'axial', window: 'auto', busy: false, key: null, seeds: null, painted: null };
    this.grids = new Map();
    this.view = null;
  }

  get libs() {
    const entry = this.extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.common');
    return entry.exports.getCornerstoneLibraries();
  }

  get serverUrl() {
    const cookie = document.cookie.split('; ').find((c) => c.startsWith('MONAILABEL_SERVER_URL='));
    const url = cookie ? decodeURIComponent(cookie.split('=')[1]) : window.location.origin + '/';
    return url.replace(/\/+$/, '');
  }

  // -- what the viewer shows -------------------------------------------------------------------
  activeViewport() {
    const { viewportGridService, cornerstoneViewportService, displaySetService } = this.services;
    const viewportId = viewportGridService.getActiveViewportId();
    const viewport = cornerstoneViewportService.getCornerstoneViewport(viewportId);
    const uids = viewportGridService.getDisplaySetsUIDsForViewport(viewportId) || [];
    const displaySet = uids.map((uid) => displaySetService.getDisplaySetByUID(uid)).find((ds) => ds && !ds.isOverlayDisplaySet && ds.Modality !== 'SEG');
    if (!viewport || !displaySet) throw new Error('open an image series in the active viewport first');
    return { viewportId, viewport, displaySet };
  }

  segmentation(viewportId) {
    const { segmentationService } = this.services;
    const active = segmentationService.getActiveSegmentation?.(viewportId);
    const seg = active || segmentationService.getSegmentations()[0];
    if (!seg) throw new Error('nothing painted: add a segmentation and paint the structure with the Brush first');
    return seg;
  }

  /** The labelmap images of a segmentation with their planes: [{ imageId, plane, pixels }]. */
  labelmapImages(seg) {
    const { cornerstone: cs } = this.libs;
    const labelmap = seg.representationData?.Labelmap || {};
    let imageIds = labelmap.imageIds;
    if (!imageIds && labelmap.volumeId) imageIds = cs.cache.getVolume(labelmap.volumeId)?.imageIds;
    if (!imageIds || !imageIds.length) throw new Error('this segmentation has no labelmap to read');
    return imageIds.map((imageId) => {
      const image = cs.cache.getImage(imageId);
      if (!image) throw new Error('the segmentation is still loading; try again in a moment');
      const planeSource = cs.metaData.get('imagePlaneModule', image.referencedImageId || imageId) || cs.metaData.get('imagePlaneModule', imageId);
      const pixels = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
      return { imageId, plane: planeOf(planeSource), pixels };
    });
  }

  async serverGrid(seriesUid) {
    if (!this.grids.has(seriesUid)) {
      const response = await this.fetchChecked(`${this.serverUrl}/sam2med/grid?image=${encodeURIComponent(seriesUid)}`);
      this.grids.set(seriesUid, new Grid(await response.json()));
    }
    return this.grids.get(seriesUid);
  }

  /** fetch, with unreachable servers and 4xx/5xx answers turned into one readable error line. */
  async fetchChecked(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new Error(`the sam2med server at ${this.serverUrl} cannot be reached`);
    }
    if (!response.ok) throw new Error(await this.detailOf(response));
    return response;
  }

  async detailOf(response) {
    const text = await response.text();
    try {
      const detail = JSON.parse(text).detail;
      return `server: ${typeof detail === 'string' ? detail : JSON.stringify(detail)} (${response.status})`;
    } catch (err) {
      return `server answered ${response.status}: ${text.split('\n')[0].slice(0, 200)}`;
    }
  }

  /** The focal point of the active viewport as OHIF's and the server's slice numbers. */
  async currentSlice() {
    const { viewport, displaySet } = this.activeViewport();
    const grid = await this.serverGrid(displaySet.SeriesInstanceUID);
    const point = viewport.getCamera().focalPoint;
    const server = sliceOf(grid, point, AXIS_INDEX[this.state.axis]);
    const ohifIndex = viewport.getCurrentImageIdIndex?.();
    const total = viewport.getNumberOfSlices?.() ?? viewport.getImageIds?.().length;
    return { server, ohif: ohifIndex === undefined ? null : ohifIndex + 1, total, count: grid.shape[AXIS_INDEX[this.state.axis]] };
  }

  // -- run ---------------------------------------------------------------------------------------
  /**
   * Seed voxels (uint8 on the painted images' own grid): the painted images, or after a run the seeds as
   * they were sent then and the slices corrected since. `seeds` maps each conditioning image to what was sent.
   */
  seedVolume(images, key) {
    const { grid, sorted } = gridOfPlanes(images.map((image) => ({ ...image.plane, image })));
    const data = new Uint8Array(grid.size);
    const plane = grid.shape[0] * grid.shape[1];
    const previous = this.state.key === key ? this.state : null;
    const seeds = new Map();
    sorted.forEach(({ image }, k) => {
      let pixels = image.pixels;
      if (previous && previous.painted) {
        const painted = previous.painted.get(image.imageId);
        const original = previous.seeds.get(image.imageId);
        const changed = painted && !equalArrays(painted, pixels);
        if (original && !changed) pixels = original;
        else if (!changed && painted) return;  // a propagated slice left as it was: not a seed
      }
      let any = false;
      for (let i = 0; i < plane; i++) {
        const v = pixels[i];
        if (v) { data[k * plane + i] = v; any = true; }
      }
      if (any) seeds.set(image.imageId, Uint8Array.from(pixels));
    });
    if (!seeds.size) throw new Error('nothing painted: paint the structure with the Brush on at least one slice');
    return { grid, data, seeds };
  }

  async run() {
    if (this.state.busy) return;
    this.setBusy(true, 'preparing the seed…');
    const started = performance.now();
    try {
      const { viewportId, displaySet } = this.activeViewport();
      const seg = this.segmentation(viewportId);
      const images = this.labelmapImages(seg);
      const key = `${seg.segmentationId}|${displaySet.SeriesInstanceUID}`;
      const { grid: seedGrid, data, seeds } = this.seedVolume(images, key);
      const { progress_id } = await (await this.fetchChecked(`${this.serverUrl}/sam2med/progress`, { method: 'POST' })).json();
      const params = { axis: this.state.axis, window: this.state.window, result_extension: '.nrrd', result_compress: true,
        progress_id };
      const range = this.rangeParam();
      if (range) params.slice_range = range;
      const form = new FormData();
      form.append('params', JSON.stringify(params));
      form.append('label', new Blob([await encodeNrrd(data, seedGrid)]), 'seed.nrrd');
      const url = `${this.serverUrl}/infer/sam2_propagate?image=${encodeURIComponent(displaySet.SeriesInstanceUID)}&output=all`;
      const poll = setInterval(() => this.pollProgress(params.progress_id), 700);
      let response;
      try {
        response = await this.fetchChecked(url, { method: 'POST', body: form });
      } finally {
        clearInterval(poll);
      }
      this.setBusy(true, 'painting the result…');
      const parts = await response.formData();
      const report = JSON.parse(await (parts.get('params').text ? parts.get('params').text() : parts.get('params')));
      const result = await decodeNrrd(await parts.get('image').arrayBuffer());
      const paintedIds = this.paint(images, result, report);
      this.state.key = key;
      this.state.seeds = seeds;
      this.state.painted = new Map(images.filter((image) => paintedIds.has(image.imageId)).map((image) => [image.imageId, Uint8Array.from(image.pixels)]));
      const { cornerstoneTools: tools } = this.libs;
      tools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(seg.segmentationId);
      this.showReport(report, (performance.now() - started) / 1000, seeds.size);
    } catch (err) {
      this.setMessage('', 'ok');
      this.showError(err);
    } finally {
      this.setBusy(false);
    }
  }

  rangeParam() {
    if (this.state.auto) return 'auto';  // the server stops each label where it ends
    const start = String(this.state.start).trim();
    const end = String(this.state.end).trim();
    if (!start && !end) return null;
    if (!/^\d+$/.test(start) || !/^\d+$/.test(end)) throw new Error('Start and End must both be slice numbers (or both empty for every slice)');
    return [Number(start), Number(end)];
  }

  /** Write the result into the labelmap images, by position, inside the range only. Returns the painted image ids. */
  paint(images, result, report) {
    const axis = AXIS_INDEX[report.axis] ?? 2;
    const [lo, hi] = report.slice_range;
    const labels = new Set(Object.keys(report.labels || {}).map(Number));
    const { grid, data } = result;
    const painted = new Set();
    for (const image of images) {
      const { pixels } = image;
      let touched = false;
      forEachVoxel(pixelMapping(image.plane, grid), image.plane, grid, (at, voxel, xyz) => {
        if (xyz[axis] < lo || xyz[axis] > hi) return;
        touched = true;
        const value = data[voxel];
        if (value) pixels[at] = value;
        else if (labels.has(pixels[at])) pixels[at] = 0;
      });
      if (touched) painted.add(image.imageId);
    }
    return painted;
  }

  async pollProgress(id) {
    try {
      const response = await fetch(`${this.serverUrl}/sam2med/progress/${id}`);
      if (!response.ok) return;
      const p = await response.json();
      if (this.state.busy && p.total) this.setBusy(true, `${p.stage === 'encode' ? 'encoding slices' : 'tracking'}: ${p.done}/${p.total}`);
    } catch (err) { /* progress is best effort */ }
  }

  // -- save --------------------------------------------------------------------------------------
  async save() {
    try {
      const { viewportId } = this.activeViewport();
      const seg = this.segmentation(viewportId);
      const dataSource = this.extensionManager.getActiveDataSource()[0];
      this.setBusy(true, 'saving the segmentation as DICOM-SEG…');
      const report = await this.commandsManager.runCommand('storeSegmentation', { segmentationId: seg.segmentationId, dataSource });
      this.setMessage(report ? 'saved: the segmentation is stored as a DICOM-SEG of this series' : 'save cancelled', 'ok');
    } catch (err) {
      this.setMessage('', 'ok');
      this.showError(err);
    } finally {
      this.setBusy(false);
    }
  }

  // -- the panel (plain DOM) ------------------------------------------------------------------------
  mount(element) {
    element.innerHTML = `
      <div class="sam2med-panel" data-testid="sam2med-panel" style="padding:8px;color:#ddd;font-size:13px;line-height:1.5">
        <div style="font-weight:600;margin-bottom:4px">SAM2 propagation (sam2med)</div>
        <div style="font-size:12px;color:#aaa">Paint the structure with the Brush on one or more slices (one segment per
          structure), set the slice range, then Run. Correct with Brush/Eraser and Run again; Save stores a DICOM-SEG.</div>
        <div data-testid="sam2med-current" style="margin:6px 0;color:#9cf">current slice: –</div>
        <table style="width:100%"><tbody>
          <tr><td>Start</td><td><input data-testid="sam2med-start" size="5" style="color:#000"></td>
              <td><button data-testid="sam2med-set-start" style="${BUTTON}">current slice</button></td></tr>
          <tr><td>End</td><td><input data-testid="sam2med-end" size="5" style="color:#000"></td>
              <td><button data-testid="sam2med-set-end" style="${BUTTON}">current slice</button></td></tr>
          <tr><td colspan="3"><label><input type="checkbox" data-testid="sam2med-auto"> auto range: stop where the structure ends</label></td></tr>
          <tr><td>Axis</td><td colspan="2"><select data-testid="sam2med-axis" style="color:#000">${AXES.map((a) => `<option>${a}</option>`).join('')}</select></td></tr>
          <tr><td>Window</td><td colspan="2"><select data-testid="sam2med-window" style="color:#000"><option>auto</option></select></td></tr>
        </tbody></table>
        <div style="margin:8px 0">
          <button data-testid="sam2med-run" style="${BUTTON};font-weight:600">Run</button>
          <button data-testid="sam2med-save" style="${BUTTON}">Save</button>
        </div>
        <div data-testid="sam2med-status" style="min-height:1.5em"></div>
        <div data-testid="sam2med-error" style="color:#f77;min-height:1.5em"></div>
        <div data-testid="sam2med-report" style="font-size:12px;white-space:pre-wrap"></div>
      </div>`;
    const q = (id) => element.querySelector(`[data-testid="sam2med-${id}"]`);
    this.view = { q };
    q('start').value = this.state.start;
    q('end').value = this.state.end;
    q('axis').value = this.state.axis;
    q('auto').checked = this.state.auto;
    const showAuto = () => { q('start').disabled = q('end').disabled = this.state.auto; };
    q('auto').onchange = () => { this.state.auto = q('auto').checked; showAuto(); };
    showAuto();
    q('start').oninput = () => { this.state.start = q('start').value; };
    q('end').oninput = () => { this.state.end = q('end').value; };
    q('axis').onchange = () => { this.state.axis = q('axis').value; this.refreshCurrent(); };
    q('window').onchange = () => { this.state.window = q('window').value; };
    q('set-start').onclick = () => this.setFromViewer('start');
    q('set-end').onclick = () => this.setFromViewer('end');
    q('run').onclick = () => this.run();
    q('save').onclick = () => this.save();
    this.loadWindows();
    this.refreshCurrent();
    this.timer = setInterval(() => this.refreshCurrent(), 1000);
    if (this.lastReport) q('report').textContent = this.lastReport;
  }

  unmount() {
    clearInterval(this.timer);
    this.view = null;
  }

  async loadWindows() {
    try {
      const info = await (await this.fetchChecked(`${this.serverUrl}/info/`)).json();
      const windows = info.models?.sam2_propagate?.config?.window || ['auto'];
      const select = this.view?.q('window');
      if (select) {
        select.innerHTML = windows.map((w) => `<option>${w}</option>`).join('');
        select.value = this.state.window;
      }
    } catch (err) {
      this.showError(err);
    }
  }

  async setFromViewer(which) {
    try {
      const slice = await this.currentSlice();
      this.state[which] = String(slice.server);
      if (this.view) this.view.q(which).value = this.state[which];
    } catch (err) {
      this.showError(err);
    }
  }

  async refreshCurrent() {
    if (!this.view) return;
    try {
      const s = await this.currentSlice();
      const ohif = s.ohif ? `OHIF image ${s.ohif}/${s.total}` : 'OHIF view';
      this.view.q('current').textContent = `current slice: server ${this.state.axis} slice ${s.server} of 0-${s.count - 1} (${ohif})`;
    } catch (err) {
      this.view.q('current').textContent = 'current slice: –';
    }
  }

  setBusy(busy, text = '') {
    this.state.busy = busy;
    if (!this.view) return;
    this.view.q('run').disabled = busy;
    this.view.q('save').disabled = busy;
    if (busy) {
      this.view.q('status').textContent = `working: ${text}`;
      this.view.q('error').textContent = '';
    }
  }

  setMessage(text, kind) {
    if (this.view) this.view.q(kind === 'ok' ? 'status' : 'error').textContent = text;
  }

  showError(err) {
    const text = String(err && err.message ? err.message : err).split('\n')[0];
    console.warn('sam2med:', text);
    if (this.view) this.view.q('error').textContent = text;
  }

  showReport(report, seconds, seedSlices) {
    const cache = report.cache || {};
    const lines = [`done in ${seconds.toFixed(1)} s (server: encode ${report.encode_seconds} s, track ${report.track_seconds} s)`,
      `slices ${report.slice_range[0]}-${report.slice_range[1]} (${report.axis}), ${seedSlices} conditioning slice(s) sent`,
      `feature cache: ${cache.request_hit_slices ?? 0} slices reused, ${cache.request_miss_slices ?? 0} encoded`];
    if (this.lastSeconds) lines.push(`this run: ${(this.lastSeconds / seconds).toFixed(1)}x the speed of the previous run`);
    for (const [value, label] of Object.entries(report.labels || {})) {
      const low = label.slices.filter((s) => (s.predicted_iou ?? s.iou ?? 1) < LOW_CONFIDENCE && !s.seed).map((s) => s.slice);
      lines.push(`label ${value}: ${label.voxels} voxels, mean score ${label.mean_object_score}` +
        (low.length ? `; check slices ${low.join(', ')} (low confidence)` : '; no low-confidence slice'));
      for (const [direction, stop] of Object.entries(label.auto_range || {})) {
        lines.push(`  auto range ${direction}: ${stop.reason.replace('_', ' ')}, last slice ${stop.last_present ?? '–'}`);
      }
    }
    this.lastSeconds = seconds;
    this.lastResult = report;
    this.lastReport = lines.join('\n');
    if (this.view) {
      this.view.q('report').textContent = this.lastReport;
      this.view.q('status').textContent = 'result painted into the segmentation';
    }
  }
}

function equalArrays(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

let controller = null;

const extension = {
  id: EXTENSION_ID,
  preRegistration({ servicesManager, commandsManager, extensionManager }) {
    controller = new Sam2medController({ servicesManager, commandsManager, extensionManager });
    window.sam2med = controller;  // for the browser test and for support: inspect state in the console
  },
  getPanelModule() {
    const React = findReact();
    function Sam2medPanel() {
      const ref = React.useRef(null);
      React.useEffect(() => {
        controller.mount(ref.current);
        return () => controller.unmount();
      }, []);
      return React.createElement('div', { ref, style: { height: '100%', overflow: 'auto' } });
    }
    return [{ name: 'sam2med', iconName: 'tab-segmentation', iconLabel: 'SAM2', label: 'SAM2 propagation', component: Sam2medPanel }];
  },
};

export default extension;
