// sam2med OHIF extension: a panel that sends the segmentation painted in OHIF as the seed of a SAM2
// propagation, paints the 3D result back, keeps corrections as conditioning slices, and saves exactly what is shown
// as DICOM-SEG or RTSTRUCT through the server's writers (POST /sam2med/save).
// Plain ES module, loaded at run time by the OHIF that MONAI Label bundles (no build step). The panel is
// plain DOM inside one React element; React itself is the bundle's own copy (see findReact).
import { Grid, alignedAxis, decodeNrrd, encodeNrrd, forEachVoxel, gridOfPlanes, pixelMapping, planeDistance, planeOf, promptVoxels,
  restoreRuns, runsOf, sliceOf } from './sam2med-geometry.js';

const EXTENSION_ID = 'sam2med';
const AXES = ['axial', 'coronal', 'sagittal'];
const AXIS_INDEX = { sagittal: 0, coronal: 1, axial: 2 };
const BUTTON = 'padding:1px 10px;border:1px solid #5acce6;border-radius:4px;color:#5acce6;margin-right:4px';
const LOW_CONFIDENCE = 0.5;  // predicted IoU below this marks a slice to check
const FORMAT_NAMES = { seg: 'DICOM-SEG', rtstruct: 'RTSTRUCT' };
// The prompt tools: id -> the server's prompt kind, its sign, and the key that selects it (shift = negative).
const TOOLS = {
  'click-pos': { kind: 'click', positive: true, key: 'c', shift: false, title: 'click +' },
  'click-neg': { kind: 'click', positive: false, key: 'c', shift: true, title: 'click −' },
  'box': { kind: 'box', positive: true, key: 'b', shift: false, title: 'box' },
  // a box on the middle slice plus the object's z-extent (Start..End when drawn): its segment's own range
  'box-range': { kind: 'box', positive: true, key: 'b', shift: true, title: 'box + z-range', range: true },
  'scribble-pos': { kind: 'scribble', positive: true, key: 's', shift: false, title: 'scribble +' },
  'scribble-neg': { kind: 'scribble', positive: false, key: 's', shift: true, title: 'scribble −' },
  'lasso-pos': { kind: 'lasso', positive: true, key: 'l', shift: false, title: 'lasso +' },
  'lasso-neg': { kind: 'lasso', positive: false, key: 'l', shift: true, title: 'lasso −' },
};
const HISTORY = 50;  // undo steps kept (prompts and runs)
const MIN_STEP_PX = 3;  // a scribble/lasso point every 3 screen pixels
const SVG_NS = 'http://www.w3.org/2000/svg';
const RENDERED = 'CORNERSTONE_IMAGE_RENDERED';
const TOOL_ACTIVATED = 'CORNERSTONE_TOOLS_TOOL_ACTIVATED';

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
    this.state = { start: '', end: '', auto: false, axis: 'axial', window: 'auto', overlap: 'keep', format: 'seg', saveName: 'sam2med segmentation',
      busy: false, key: null, seeds: null, painted: null };
    this.ready = false;  // the image and its grid are there: the controls are usable
    this.grids = new Map();
    this.view = null;
    this.tool = null;  // the prompt tool in use (a key of TOOLS), or null: OHIF's own tools get the mouse
    this.prompts = [];  // { id, series, label, kind, positive, world: [[x, y, z] mm...], axis, slice, normal, half }
    this.nextPromptId = 1;
    this.drag = null;  // the prompt being drawn
    this.undoStack = [];
    this.redoStack = [];
    this.stateId = null;  // the server's correction-loop state the page shows (report.state_id)
    this.live = false;
    this.refine = true;  // a correction (a Run after a Run) re-propagates only the band of slices it can change
    this.liveQueued = false;
    this.warmed = new Set();  // series asked to warm up
    this.overlays = new Map();  // viewport element -> its SVG overlay
    this.modeActive = false;
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

  // -- slices as OHIF numbers them ------------------------------------------------------------------
  /**
   * The active viewport's images in OHIF's order (image number = index + 1, as its overlay counts) with their
   * planes, the server grid, and whether OHIF's images step along the chosen axis (then Start/End and every
   * slice the panel names are OHIF image numbers; otherwise server slice numbers along that axis).
   */
  async numbering() {
    const { viewport, displaySet } = this.activeViewport();
    const { cornerstone: cs } = this.libs;
    const grid = await this.serverGrid(displaySet.SeriesInstanceUID);
    const axis = AXIS_INDEX[this.state.axis];
    const imageIds = viewport.getImageIds?.() || [];
    const planes = imageIds.map((id) => {
      const meta = cs.metaData.get('imagePlaneModule', id);
      return meta && meta.imagePositionPatient ? planeOf(meta) : null;
    });
    if (!planes.length || planes.some((p) => !p)) throw new Error('the image is still loading');
    const step = grid.axes[axis];
    const along = Math.abs(planes[0].normal[0] * step[0] + planes[0].normal[1] * step[1] + planes[0].normal[2] * step[2]) / grid.spacing[axis];
    const slices = planes.map((p) => sliceOf(grid, p.position, axis));
    return { viewport, grid, axis, imageIds, planes, slices, numbered: along > 0.99 };
  }

  /** "image 12 (z -784.5 mm)" for server slice k, or "slice k" when OHIF's images do not step along the axis. */
  describeSlice(n, k) {
    if (!n.numbered) return `${this.state.axis} slice ${k}`;
    const at = n.slices.indexOf(k);
    if (at < 0) return `slice ${k} (not an image of this series)`;
    return `image ${at + 1} (${positionText(n.planes[at])})`;
  }

  describeSlices(n, list) {
    const sorted = [...list].sort((a, b) => a - b);
    if (!n.numbered) return `${this.state.axis} slice(s) ${sorted.join(', ')}`;
    const numbers = sorted.map((k) => n.slices.indexOf(k) + 1).filter((x) => x > 0).sort((a, b) => a - b);
    return `image${numbers.length > 1 ? 's' : ''} ${numbers.join(', ')}`;
  }

  /** The focal point of the active viewport: OHIF's image number, its position, and the server slice. */
  async currentSlice() {
    const n = await this.numbering();
    const point = n.viewport.getCamera().focalPoint;
    const server = sliceOf(n.grid, point, n.axis);
    let index = n.viewport.getCurrentImageIdIndex?.();
    // a volume viewport (MPR) counts its own slices along its normal, not OHIF's images: the image at the focal point
    if (n.numbered && n.slices[index] !== server) index = n.slices.indexOf(server);
    if (n.numbered && (index === undefined || index < 0 || index >= n.planes.length)) throw new Error('the image is still loading');
    if (server < 0 || server >= n.grid.shape[n.axis]) throw new Error('the image is still loading');
    return { n, server, ohif: index + 1, total: n.planes.length, plane: n.planes[index], count: n.grid.shape[n.axis] };
  }

  // -- segments ----------------------------------------------------------------------------------
  /** The segments of a segmentation: [{ value, name, color: [r, g, b], locked }], names unique. */
  segmentsOf(seg, viewportId) {
    const { segmentationService } = this.services;
    const seen = new Set();
    return Object.values(seg.segments || {}).filter((s) => s && s.segmentIndex > 0).map((s) => {
      let name = String(s.label || `Segment ${s.segmentIndex}`).trim() || `Segment ${s.segmentIndex}`;
      if (seen.has(name.toLowerCase())) name = `${name} (${s.segmentIndex})`;
      seen.add(name.toLowerCase());
      let color = null;
      try { color = segmentationService.getSegmentColor(viewportId, seg.segmentationId, s.segmentIndex); } catch (err) { /* not shown here */ }
      return { value: s.segmentIndex, name, color: (color || [128, 128, 128]).slice(0, 3).map(Number), locked: !!s.locked };
    });
  }

  nameOf(value) {
    const found = (this.segmentList || []).find((s) => s.value === Number(value));
    return found ? `'${found.name}'` : `label ${value}`;
  }

  // -- run ---------------------------------------------------------------------------------------
  /**
   * Seed voxels (uint8 on the painted images' own grid): the painted images, or after a run the seeds as
   * they were sent then and the slices corrected since; a locked segment is sent wherever it lies, as it is
   * returned exactly as sent. `seeds` maps each conditioning image to what was sent.
   */
  seedVolume(images, key, locked, prompted = false) {
    const { grid, sorted } = gridOfPlanes(images.map((image) => ({ ...image.plane, image })));
    const data = new Uint8Array(grid.size);
    const plane = grid.shape[0] * grid.shape[1];
    const previous = this.state.key === key ? this.state : null;
    const seeds = new Map();
    sorted.forEach(({ image }, k) => {
      let pixels = image.pixels;
      let conditioning = true;
      if (previous && previous.painted) {
        const painted = previous.painted.get(image.imageId);
        const original = previous.seeds.get(image.imageId);
        const changed = painted && !equalArrays(painted, pixels);
        if (original && !changed) pixels = original;
        else if (!changed && painted) conditioning = false;  // a propagated slice left as it was: not a seed
      }
      let any = false;
      for (let i = 0; i < plane; i++) {
        const now = image.pixels[i];
        if (locked.has(now)) { data[k * plane + i] = now; continue; }
        const v = conditioning ? pixels[i] : 0;
        if (v && !locked.has(v)) { data[k * plane + i] = v; any = true; }
      }
      if (any) seeds.set(image.imageId, Uint8Array.from(pixels));
    });
    if (!seeds.size && !prompted) {
      throw new Error('nothing painted: paint the structure with the Brush on at least one slice, or give prompts (c click, b box, s scribble, l lasso) (locked segments are not propagated)');
    }
    return { grid, data, seeds, sorted };
  }

  async run() {
    if (this.state.busy || !this.ready) return;
    this.setBusy(true, 'preparing the seed…');
    const started = performance.now();
    try {
      const { viewportId, displaySet } = this.activeViewport();
      const seg = this.segmentation(viewportId);
      const images = this.labelmapImages(seg);
      const segments = this.segmentsOf(seg, viewportId);
      this.segmentList = segments;
      const locked = new Set(segments.filter((s) => s.locked).map((s) => s.value));
      const key = `${seg.segmentationId}|${displaySet.SeriesInstanceUID}`;
      const n = await this.numbering();
      const prompts = this.promptsParam(displaySet.SeriesInstanceUID, n.grid);
      const { grid: seedGrid, data, seeds, sorted } = this.seedVolume(images, key, locked, prompts.length > 0);
      const range = this.rangeParam(n);
      this.checkSeedsInRange(n, images, seeds, range, locked);
      const { progress_id } = await (await this.fetchChecked(`${this.serverUrl}/sam2med/progress`, { method: 'POST' })).json();
      const params = { axis: this.state.axis, window: this.state.window, overlap: this.state.overlap, result_extension: '.nrrd',
        result_compress: true, progress_id, label_names: Object.fromEntries(segments.map((s) => [s.name, s.value])) };
      if (locked.size) params.locked_labels = [...locked];
      if (range) params.slice_range = range;
      if (prompts.length) params.prompts = prompts;
      if (this.stateId) {
        params.parent_state = this.stateId;
        if (this.refine) params.refine = true;  // a correction re-runs only the band of slices it can change
      }
      if (this.live) params.crop_to_change = true;  // the answer is the box of what changed; elsewhere it is the seed sent
      const form = new FormData();
      form.append('params', JSON.stringify(params));
      if (seeds.size) form.append('label', new Blob([await encodeNrrd(data, seedGrid)]), 'seed.nrrd');
      const before = this.snapshot(true);  // undo returns the page (and the server state) to this
      const url = `${this.serverUrl}/infer/sam2_propagate?image=${encodeURIComponent(displaySet.SeriesInstanceUID)}&output=all`;
      const live = this.live ? { grid: n.grid, axis: AXIS_INDEX[params.axis], images, locked, seg, since: 0, painted: 0 } : null;
      this.liveRun = live;
      const poll = setInterval(() => this.pollProgress(params.progress_id, live), live ? 200 : 700);
      let response;
      try {
        response = await this.fetchChecked(url, { method: 'POST', body: form });
      } finally {
        clearInterval(poll);
      }
      this.liveRun = null;
      this.responseAt = performance.now();
      this.setBusy(true, 'painting the result…');
      const parts = await response.formData();
      const report = JSON.parse(await (parts.get('params').text ? parts.get('params').text() : parts.get('params')));
      const result = await decodeNrrd(await parts.get('image').arrayBuffer());
      this.remember(true, before);
      const sent = { data, plane: seedGrid.shape[0] * seedGrid.shape[1], slot: new Map(sorted.map(({ image }, k) => [image.imageId, k])) };
      const paintedIds = this.paint(images, report.cropped ? this.uncropped(result, report, n.grid, images, sent) : result, report, locked);
      // what each image looked like when a Run last painted it (a refined Run paints only its bands: the
      // images it left keep their earlier entry, so an untouched image is never sent as a correction)
      const earlier = this.state.key === key && this.state.painted ? this.state.painted : new Map();
      this.stateId = report.state_id || null;
      this.state.key = key;
      this.state.seeds = seeds;
      this.state.painted = new Map([...earlier, ...images.filter((image) => paintedIds.has(image.imageId))
        .map((image) => [image.imageId, Uint8Array.from(image.pixels)])]);
      const { cornerstoneTools: tools } = this.libs;
      tools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(seg.segmentationId);
      this.showReport(n, report, (performance.now() - started) / 1000, seeds.size, prompts.length);
    } catch (err) {
      this.setMessage('', 'ok');
      this.showError(err);
    } finally {
      this.setBusy(false);
      this.showTools();
      if (this.liveQueued) { this.liveQueued = false; setTimeout(() => this.run(), 0); }
    }
  }

  /** The range as server slices, from Start/End in OHIF image numbers (either order), or null / 'auto'. */
  rangeParam(n) {
    if (this.state.auto) return 'auto';  // the server stops each label where it ends
    const start = String(this.state.start).trim();
    const end = String(this.state.end).trim();
    if (!start && !end) return null;
    const what = n.numbered ? 'OHIF image numbers' : `${this.state.axis} slice numbers`;
    if (!/^\d+$/.test(start) || !/^\d+$/.test(end)) throw new Error(`Start and End must both be ${what} (or both empty for every slice)`);
    if (!n.numbered) return [Number(start), Number(end)];
    const toSlice = (text, which) => {
      const number = Number(text);
      if (number < 1 || number > n.slices.length) throw new Error(`${which} ${number} is not an image of this series (images 1 to ${n.slices.length})`);
      return n.slices[number - 1];
    };
    return [toSlice(start, 'Start'), toSlice(end, 'End')];
  }

  /** Every drawn segment inside the range, said in OHIF's numbers before anything is sent. */
  checkSeedsInRange(n, images, seeds, range, locked) {
    if (!Array.isArray(range) || !n.numbered) return;
    const [lo, hi] = [Math.min(...range), Math.max(...range)];
    const outside = new Map();
    for (const image of images) {
      if (!seeds.has(image.imageId)) continue;
      const k = sliceOf(n.grid, image.plane.position, n.axis);
      if (k >= lo && k <= hi) continue;
      for (const v of new Set(seeds.get(image.imageId))) {
        if (v && !locked.has(v)) outside.set(v, [...(outside.get(v) || []), k]);
      }
    }
    if (!outside.size) return;
    const [value, slices] = [...outside.entries()][0];
    throw new Error(`${this.nameOf(value)} is drawn on ${this.describeSlices(n, slices)}, outside Start..End ` +
      `(${this.describeSlice(n, range[0])} to ${this.describeSlice(n, range[1])}): widen the range or erase that drawing`);
  }

  /**
   * A result cropped to the box of what changed (`crop_to_change`), as the whole grid: inside the box the
   * answer, elsewhere the seed as it was sent (the server's reference: what did not change equals it).
   * `sent`: the seed's voxels (`data`), its slice size and each image's slot in it (the seed's own grid).
   */
  uncropped(result, report, grid, images, sent) {
    const data = new Uint8Array(grid.size);
    const [nx, ny] = grid.shape;
    for (const image of images) {
      const k = sent.slot.get(image.imageId);
      if (k === undefined) continue;
      forEachVoxel(pixelMapping(image.plane, grid), image.plane, grid, (at, voxel) => { data[voxel] = sent.data[k * sent.plane + at]; });
    }
    if (report.changed_box) {
      const [low, high] = report.changed_box;
      const [cx, cy] = result.grid.shape;
      for (let z = low[2]; z <= high[2]; z++) {
        for (let y = low[1]; y <= high[1]; y++) {
          for (let x = low[0]; x <= high[0]; x++) {
            data[x + nx * (y + ny * z)] = result.data[(x - low[0]) + cx * ((y - low[1]) + cy * (z - low[2]))];
          }
        }
      }
    }
    return { grid, data };
  }

  /**
   * Write the result into the labelmap images, by position, inside the range only; a propagated segment is
   * cleared where the result lacks it only inside its own range (a box's z-range, a refined band), so that
   * another segment's wider range never erases it. Returns the painted image ids.
   */
  paint(images, result, report, locked) {
    const axis = AXIS_INDEX[report.axis] ?? 2;
    const [lo, hi] = report.slice_range;
    const ranges = new Map(Object.entries(report.labels || {}).map(([value, info]) => [Number(value), info.slice_range || report.slice_range]));
    const { grid, data } = result;
    const painted = new Set();
    for (const image of images) {
      const { pixels } = image;
      let touched = false;
      forEachVoxel(pixelMapping(image.plane, grid), image.plane, grid, (at, voxel, xyz) => {
        const k = xyz[axis];
        if (k < lo || k > hi || locked.has(pixels[at])) return;
        touched = true;
        const value = data[voxel];
        if (value) { pixels[at] = value; return; }
        const own = ranges.get(pixels[at]);
        if (own && k >= own[0] && k <= own[1]) pixels[at] = 0;
      });
      if (touched) painted.add(image.imageId);
    }
    return painted;
  }

  async pollProgress(id, live = null) {
    try {
      if (live && live.polling) return;
      if (live) live.polling = true;
      const response = await fetch(`${this.serverUrl}/sam2med/progress/${id}${live ? `?since=${live.since}` : ''}`);
      if (live) live.polling = false;
      if (!response.ok) return;
      const p = await response.json();
      if (live && Array.isArray(p.slices) && p.slice_shape && this.liveRun === live && this.state.busy) {
        for (const entry of p.slices) this.paintLiveSlice(live, entry, p.slice_shape);
        if (p.slices.length) this.libs.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(live.seg.segmentationId);
        live.since = p.next ?? live.since + p.slices.length;
      }
      if (this.state.busy && p.total) this.setBusy(true, `${p.stage === 'encode' ? 'encoding slices' : 'tracking'}: ${p.done}/${p.total}`);
    } catch (err) { /* progress is best effort */ }
  }

  // -- prompt tools (clicks, boxes, scribbles, lassos) ----------------------------------------------
  /** Listeners of the mode (keys, the mouse on viewports, OHIF's tool changes); idempotent. */
  enterMode() {
    if (this.modeActive) return;
    this.modeActive = true;
    this.listeners = [
      [window, 'keydown', (e) => this.onKey(e), true],
      [window, 'mousedown', (e) => this.onMouseDown(e), true],
      [window, 'mousemove', (e) => this.onMouseMove(e), true],
      [window, 'mouseup', (e) => this.onMouseUp(e), true],
      [window, 'dblclick', (e) => this.swallow(e), true],
      [window, 'click', (e) => this.swallow(e), true],
    ];
    for (const [target, type, fn, capture] of this.listeners) target.addEventListener(type, fn, capture);
    try {
      this.toolActivated = () => { if (this.tool && !this.settingTool) this.setTool(null); };
      this.libs.cornerstone.eventTarget.addEventListener(TOOL_ACTIVATED, this.toolActivated);
    } catch (err) { /* OHIF's tool events are a convenience */ }
    this.overlayTimer = setInterval(() => this.attachOverlays(), 1000);
  }

  exitMode() {
    if (!this.modeActive) return;
    this.modeActive = false;
    for (const [target, type, fn, capture] of this.listeners) target.removeEventListener(type, fn, capture);
    try { this.libs.cornerstone.eventTarget.removeEventListener(TOOL_ACTIVATED, this.toolActivated); } catch (err) { /* gone */ }
    clearInterval(this.overlayTimer);
    for (const [element, overlay] of this.overlays) { element.removeEventListener(RENDERED, overlay.listener); overlay.svg.remove(); }
    this.overlays.clear();
    this.tool = null;
    this.drag = null;
  }

  /** Select a prompt tool (null: back to OHIF's tools). */
  setTool(id) {
    this.tool = id && TOOLS[id] ? id : null;
    this.drag = null;
    this.redrawOverlays();
    this.showTools();
  }

  onKey(e) {
    const target = e.target;
    if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
    const key = String(e.key || '').toLowerCase();
    if ((e.ctrlKey || e.metaKey) && !e.altKey && (key === 'z' || key === 'y')) {
      const redo = key === 'y' || e.shiftKey;
      if (!(redo ? this.redoStack : this.undoStack).length) return;  // nothing of ours: OHIF's own undo (the brush)
      e.preventDefault();
      e.stopImmediatePropagation();
      if (redo) this.redo(); else this.undo();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (key === 'escape') { if (this.tool) this.setTool(null); return; }
    const id = Object.keys(TOOLS).find((t) => TOOLS[t].key === key && TOOLS[t].shift === e.shiftKey);
    if (!id) return;
    e.preventDefault();
    e.stopImmediatePropagation();  // OHIF binds c (cine) and l (rotate): in this mode they select prompt tools
    this.setTool(this.tool === id ? null : id);
  }

  /** The viewport under a mouse event: { element, viewport } of cornerstone's enabled element, or null. */
  viewportAt(e) {
    const element = e.target && e.target.closest ? e.target.closest('[data-viewport-uid]') : null;
    if (!element) return null;
    const enabled = this.libs.cornerstone.getEnabledElement(element);
    return enabled && enabled.viewport ? { element, viewport: enabled.viewport } : null;
  }

  canvasPoint(element, e) {
    const rect = element.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  swallow(e) {
    if (this.tool && e.button === 0 && this.viewportAt(e)) { e.preventDefault(); e.stopImmediatePropagation(); }
  }

  onMouseDown(e) {
    if (!this.tool || e.button !== 0) return;
    const at = this.viewportAt(e);
    if (!at) return;
    e.preventDefault();
    e.stopImmediatePropagation();  // the prompt tool has the mouse: no window/level, no brush
    const { viewportGridService } = this.services;
    if (viewportGridService.getActiveViewportId() !== at.viewport.id) viewportGridService.setActiveViewportId(at.viewport.id);
    const canvas = this.canvasPoint(at.element, e);
    this.drag = { tool: this.tool, element: at.element, viewport: at.viewport, canvas: [canvas], world: [at.viewport.canvasToWorld(canvas)] };
    this.drawOverlay(at.element, at.viewport);
  }

  onMouseMove(e) {
    if (!this.drag) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    const { drag } = this;
    const canvas = this.canvasPoint(drag.element, e);
    const kind = TOOLS[drag.tool].kind;
    if (kind === 'click') return;
    if (kind === 'box') {
      drag.canvas[1] = canvas;
      drag.world[1] = drag.viewport.canvasToWorld(canvas);
    } else {
      const last = drag.canvas[drag.canvas.length - 1];
      if (Math.hypot(canvas[0] - last[0], canvas[1] - last[1]) < MIN_STEP_PX) return;
      drag.canvas.push(canvas);
      drag.world.push(drag.viewport.canvasToWorld(canvas));
    }
    this.drawOverlay(drag.element, drag.viewport);
  }

  onMouseUp(e) {
    if (!this.drag) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    const drag = this.drag;
    this.drag = null;
    const kind = TOOLS[drag.tool].kind;
    if (kind !== 'click') this.onMouseMove(e);  // the last point
    this.addPrompt(drag).catch((err) => this.showError(err)).finally(() => this.redrawOverlays());
  }

  /** A finished gesture becomes a prompt of the active segment on the slice it was drawn on (undoable). */
  async addPrompt(drag) {
    const { tool, viewport, world } = drag;
    const { kind, positive, range: withRange } = TOOLS[tool];
    const need = { click: 1, box: 2, scribble: 2, lasso: 3 }[kind];
    const points = kind === 'box' ? world.slice(0, 2) : kind === 'click' ? world.slice(0, 1) : world;
    if (points.length < need) throw new Error(`a ${kind} needs ${kind === 'box' ? 'a drag between two corners' : `at least ${need} points: drag`}`);
    const { viewportId, displaySet } = this.activeViewport();
    const seg = this.segmentation(viewportId);
    const active = this.services.segmentationService.getActiveSegment?.(viewportId);
    const segments = this.segmentsOf(seg, viewportId);
    const label = active ? Number(active.segmentIndex) : segments[0]?.value;
    if (!label) throw new Error('add a segment first: a prompt belongs to the active segment');
    if (segments.find((s) => s.value === label)?.locked) throw new Error(`${this.nameOf(label)} is locked: unlock it to prompt it`);
    const grid = await this.serverGrid(displaySet.SeriesInstanceUID);
    const camera = viewport.getCamera();
    const axis = alignedAxis(grid, camera.viewPlaneNormal);
    if (axis < 0) throw new Error('this view is oblique to the image: draw prompts on an axial, coronal or sagittal view');
    const slice = Math.round(grid.toIndex(camera.focalPoint)[axis]);
    if (slice < 0 || slice >= grid.shape[axis]) throw new Error('the prompt is outside the image');
    if (kind === 'box') {
      const [a, b] = promptVoxels(grid, points, axis, slice);
      if ([0, 1, 2].filter((c) => c !== axis).some((c) => Math.abs(a[c] - b[c]) < 1)) throw new Error('a box needs a drag between two corners');
    }
    const series = displaySet.SeriesInstanceUID;
    const others = this.prompts.filter((p) => p.series === series);
    if (others.length && others[0].axis !== axis) {
      throw new Error(`the prompts so far are on ${AXES.find((a) => AXIS_INDEX[a] === others[0].axis)} slices: draw on that view, or Clear prompts first`);
    }
    const axisName = Object.keys(AXIS_INDEX).find((a) => AXIS_INDEX[a] === axis);
    if (this.state.axis !== axisName) {
      this.state.axis = axisName;  // prompts propagate along the normal of the view they are drawn on
      if (this.view) this.view.q('axis').value = axisName;
    }
    let slices = null;
    if (withRange) {  // the z-range of the box-and-range gesture: Start..End as they are now, in server slices
      const range = this.rangeParam(await this.numbering());
      if (!Array.isArray(range)) throw new Error('box + z-range: type Start and End (the first and last image of the object) first');
      slices = [Math.min(...range), Math.max(...range)];
      if (slice < slices[0] || slice > slices[1]) throw new Error(`box + z-range: the box is on slice ${slice}, outside its range ${slices[0]}..${slices[1]}`);
      if (this.prompts.some((p) => p.series === series && p.label === label && p.slices && (p.slices[0] !== slices[0] || p.slices[1] !== slices[1]))) {
        throw new Error(`${this.nameOf(label)} has a box with another z-range: one range per segment (undo it, or Clear prompts)`);
      }
    }
    this.remember(false);
    this.prompts.push({ id: this.nextPromptId++, series, label, kind, positive, world: points.map((p) => Array.from(p)), axis, slice,
      normal: Array.from(camera.viewPlaneNormal), half: grid.spacing[axis] / 2, slices });
    this.showPrompts();
    if (this.live) this.runLive();
  }

  /** The prompts of a series as the server takes them (voxel indices on its grid). */
  promptsParam(series, grid) {
    return this.prompts.filter((p) => p.series === series).map((p) => ({ label: p.label, kind: p.kind, positive: p.positive,
      points: promptVoxels(grid, p.world, p.axis, p.slice), ...(p.slices ? { slices: p.slices } : {}) }));
  }

  clearPrompts() {
    if (!this.prompts.length) return;
    this.remember(false);
    this.prompts = [];
    this.showPrompts();
  }

  runLive() {
    if (this.state.busy) { this.liveQueued = true; return; }
    this.run();
  }

  // -- undo / redo: prompts, runs, the page's labelmap and the server state together ---------------------
  /** The page state an undo step returns to; with the labelmap (as runs per image) before a Run. */
  snapshot(withLabelmap) {
    const step = { prompts: this.prompts.slice(), stateId: this.stateId,
      run: { key: this.state.key, seeds: this.state.seeds, painted: this.state.painted, lastResult: this.lastResult }, labelmap: null };
    if (withLabelmap) {
      const { viewportId } = this.activeViewport();
      const seg = this.segmentation(viewportId);
      step.labelmap = { segmentationId: seg.segmentationId, images: new Map(this.labelmapImages(seg).map((im) => [im.imageId, runsOf(im.pixels)])) };
    }
    return step;
  }

  remember(withLabelmap, step = null) {
    this.undoStack.push(step || this.snapshot(withLabelmap));
    if (this.undoStack.length > HISTORY) this.undoStack.shift();
    this.redoStack = [];
    this.showTools();
  }

  restore(step) {
    this.prompts = step.prompts.slice();
    this.stateId = step.stateId;
    Object.assign(this.state, { key: step.run.key, seeds: step.run.seeds, painted: step.run.painted });
    this.lastResult = step.run.lastResult;
    if (step.labelmap) {
      const { segmentationService } = this.services;
      const seg = segmentationService.getSegmentation(step.labelmap.segmentationId);
      if (seg) {
        for (const image of this.labelmapImages(seg)) {
          const runs = step.labelmap.images.get(image.imageId);
          if (runs) restoreRuns(image.pixels, runs);
        }
        this.libs.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(seg.segmentationId);
      }
    }
    this.showPrompts();
  }

  undo() { this.step(this.undoStack, this.redoStack, 'undone'); }

  redo() { this.step(this.redoStack, this.undoStack, 'redone'); }

  step(from, to, what) {
    if (this.state.busy || !from.length) return;
    try {
      const step = from.pop();
      to.push(this.snapshot(!!step.labelmap));
      this.restore(step);
      this.setMessage(`${what}: ${step.labelmap ? 'a Run (the labelmap as it was)' : 'a prompt change'}`, 'ok');
    } catch (err) {
      this.showError(err);
    }
    this.showTools();
  }

  // -- the SVG overlay of prompts on each viewport ----------------------------------------------------
  attachOverlays() {
    if (!this.modeActive) return;
    const { cornerstone: cs } = this.libs;
    for (const element of document.querySelectorAll('[data-viewport-uid]')) {
      if (this.overlays.has(element)) continue;
      if (!cs.getEnabledElement(element)) continue;
      const svg = document.createElementNS(SVG_NS, 'svg');
      svg.setAttribute('data-testid', 'sam2med-overlay');
      svg.style.cssText = 'position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;z-index:10';
      element.appendChild(svg);
      const listener = () => { const enabled = cs.getEnabledElement(element); if (enabled) this.drawOverlay(element, enabled.viewport); };
      element.addEventListener(RENDERED, listener);
      this.overlays.set(element, { svg, listener });
      listener();
    }
    for (const [element, overlay] of this.overlays) {
      if (!element.isConnected) { element.removeEventListener(RENDERED, overlay.listener); this.overlays.delete(element); }
    }
  }

  redrawOverlays() {
    const { cornerstone: cs } = this.libs;
    for (const element of this.overlays.keys()) {
      const enabled = cs.getEnabledElement(element);
      if (enabled) this.drawOverlay(element, enabled.viewport);
    }
  }

  /** The prompts on the slice a viewport shows (same plane within half a slice), drawn at their canvas positions. */
  drawOverlay(element, viewport) {
    const overlay = this.overlays.get(element);
    if (!overlay) return;
    const { svg } = overlay;
    let series = null;
    try {
      const uids = this.services.viewportGridService.getDisplaySetsUIDsForViewport(viewport.id) || [];
      series = uids.map((uid) => this.services.displaySetService.getDisplaySetByUID(uid)).find((ds) => ds && ds.Modality !== 'SEG')?.SeriesInstanceUID;
    } catch (err) { /* no display set */ }
    const camera = viewport.getCamera();
    const shown = this.prompts.filter((p) => p.series === series && Math.abs(dotAbs(p.normal, camera.viewPlaneNormal)) > 0.99 &&
      Math.abs(planeDistance(p.world[0], camera.focalPoint, camera.viewPlaneNormal)) <= p.half);
    const colors = new Map((this.segmentList || []).map((s) => [s.value, s.color]));
    const parts = shown.map((p) => shape(p.kind, p.positive, p.world.map((w) => viewport.worldToCanvas(w)), colors.get(p.label), `${p.kind}-${p.positive ? 'pos' : 'neg'}`, p.id));
    if (this.drag && this.drag.element === element) {
      const { kind, positive } = TOOLS[this.drag.tool];
      parts.push(shape(kind, positive, this.drag.world.map((w) => viewport.worldToCanvas(w)), [255, 255, 0], 'draft', 0));
    }
    svg.innerHTML = parts.join('');
  }

  showTools() {
    if (!this.view) return;
    for (const id of Object.keys(TOOLS)) {
      const button = this.view.q(`tool-${id}`);
      if (button) button.style.background = this.tool === id ? '#5acce6' : '';
      if (button) button.style.color = this.tool === id ? '#000' : '#5acce6';
    }
    this.view.q('undo').disabled = !this.undoStack.length || this.state.busy;
    this.view.q('redo').disabled = !this.redoStack.length || this.state.busy;
    this.view.q('tool').textContent = this.tool ? `tool: ${TOOLS[this.tool].title} (Esc: back to OHIF's tools)` : 'tool: OHIF\'s (Brush, Eraser, window/level…)';
  }

  /** The prompts listed per segment and slice. */
  showPrompts() {
    this.redrawOverlays();
    if (!this.view) return;
    const groups = new Map();
    for (const p of this.prompts) {
      const axisName = Object.keys(AXIS_INDEX).find((a) => AXIS_INDEX[a] === p.axis);
      const where = `${this.nameOf(p.label)} on ${axisName} slice ${p.slice}`;
      groups.set(where, [...(groups.get(where) || []), `${p.kind} ${p.positive ? '+' : '−'}${p.slices ? ` (slices ${p.slices[0]}..${p.slices[1]})` : ''}`]);
    }
    this.view.q('prompts').textContent = groups.size ? [...groups].map(([where, list]) => `${where}: ${list.join(', ')}`).join('\n') : 'no prompts';
    this.showTools();
  }

  /**
   * Live mode: one finished slice of one label (`/sam2med/progress/{id}?since=N`, rle of its (H, W) mask as the
   * engine tracks it: H, W = the grid's other two axes, the larger index first) painted into the page by
   * position, locked voxels left alone; the response then paints the whole result as usual.
   */
  paintLiveSlice(live, entry, [height, width]) {
    const { grid, axis, images, locked } = live;
    const [first, second] = [0, 1, 2].filter((c) => c !== axis);
    if (grid.shape[first] !== width || grid.shape[second] !== height) return;
    const mask = new Uint8Array(height * width);
    let at = 0;
    entry.rle.forEach((count, i) => { if (i % 2) mask.fill(1, at, at + count); at += count; });
    const value = Number(entry.label);
    for (const image of images) {
      const { pixels } = image;
      const mapping = pixelMapping(image.plane, grid);
      if (!mapping.di[axis] && !mapping.dj[axis] && mapping.base[axis] !== entry.axis_index) continue;  // another slice
      forEachVoxel(mapping, image.plane, grid, (p, voxel, xyz) => {
        if (xyz[axis] !== entry.axis_index || locked.has(pixels[p])) return;
        if (mask[xyz[second] * width + xyz[first]]) pixels[p] = value;
        else if (pixels[p] === value) pixels[p] = 0;
      });
    }
    live.painted += 1;
    (this.liveLog = this.liveLog || []).push({ seq: entry.seq, slice: entry.axis_index, label: value, at: performance.now() });
  }

  // -- save --------------------------------------------------------------------------------------
  /**
   * Send the segmentation exactly as shown (every labelmap image, on its own geometry) with its segments to
   * the server, which writes the DICOM-SEG (or RTSTRUCT) with its own writer and stores it.
   */
  async save() {
    if (this.state.busy || !this.ready) return;
    try {
      const { viewportId, displaySet } = this.activeViewport();
      const seg = this.segmentation(viewportId);
      const images = this.labelmapImages(seg);
      const segments = this.segmentsOf(seg, viewportId);
      this.segmentList = segments;
      const { grid, sorted } = gridOfPlanes(images.map((image) => ({ ...image.plane, image })));
      const data = new Uint8Array(grid.size);
      const plane = grid.shape[0] * grid.shape[1];
      sorted.forEach(({ image }, k) => data.set(image.pixels.subarray ? image.pixels.subarray(0, plane) : image.pixels.slice(0, plane), k * plane));
      const key = `${seg.segmentationId}|${displaySet.SeriesInstanceUID}`;
      const format = this.state.format;
      const params = { format, description: String(this.state.saveName || '').trim() || 'sam2med segmentation',
        segments: segments.map(({ value, name, color }) => ({ value, name, color })),
        model_version: this.state.key === key && this.lastResult ? this.lastResult.model_version : '' };
      this.setBusy(true, `saving as ${FORMAT_NAMES[format]}…`);
      const form = new FormData();
      form.append('params', JSON.stringify(params));
      form.append('label', new Blob([await encodeNrrd(data, grid)]), 'labelmap.nrrd');
      const url = `${this.serverUrl}/sam2med/save?image=${encodeURIComponent(displaySet.SeriesInstanceUID)}`;
      const saved = await (await this.fetchChecked(url, { method: 'POST', body: form })).json();
      this.lastSave = saved;
      const what = saved.segments.map((s) => `'${s.name}' ${s.voxels} voxels`).join(', ');
      this.setMessage(`saved "${saved.description}" as ${FORMAT_NAMES[saved.format]} of this series (${what})`, 'ok');
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
        <div style="font-size:12px;color:#aaa">Paint each structure with the Brush on one or more images (one segment per
          structure), set Start and End (OHIF image numbers, either order), then Run. Correct with Brush/Eraser and Run
          again. Run stores nothing; Save stores what you see on the DICOM server.</div>
        <div data-testid="sam2med-current" style="margin:6px 0;color:#9cf">loading the image…</div>
        <table style="width:100%"><tbody>
          <tr><td>Start</td><td><input data-testid="sam2med-start" size="5" style="color:#000"></td>
              <td><button data-testid="sam2med-set-start" style="${BUTTON}">current image</button></td></tr>
          <tr><td>End</td><td><input data-testid="sam2med-end" size="5" style="color:#000"></td>
              <td><button data-testid="sam2med-set-end" style="${BUTTON}">current image</button></td></tr>
          <tr><td colspan="3" data-testid="sam2med-range" style="font-size:12px;color:#aaa"></td></tr>
          <tr><td colspan="3"><label><input type="checkbox" data-testid="sam2med-auto"> auto range: stop where the structure ends</label></td></tr>
          <tr><td>Axis</td><td colspan="2"><select data-testid="sam2med-axis" style="color:#000">${AXES.map((a) => `<option>${a}</option>`).join('')}</select></td></tr>
          <tr><td>Window</td><td colspan="2"><select data-testid="sam2med-window" style="color:#000"><option>auto</option></select></td></tr>
          <tr><td>Overlap</td><td colspan="2"><select data-testid="sam2med-overlap" style="color:#000" title="where two segments meet">
            <option value="keep">keep: drawn and locked voxels stay</option><option value="overwrite">overwrite drawings</option>
            <option value="confidence">the more confident segment wins</option></select></td></tr>
        </tbody></table>
        <div style="margin-top:6px">Segments (lock: kept exactly, never tracked or overwritten)</div>
        <div data-testid="sam2med-segments" style="font-size:12px;margin-bottom:4px">–</div>
        <div style="margin-top:6px">Prompts (for the active segment, on the image shown; Brush/Eraser: OHIF's Segmentation panel)</div>
        <div style="line-height:2">${Object.entries(TOOLS).map(([id, t]) =>
          `<button data-testid="sam2med-tool-${id}" title="${t.title}: key ${t.shift ? 'shift-' : ''}${t.key}" style="${BUTTON}">${t.title} <small>${t.shift ? '⇧' : ''}${t.key.toUpperCase()}</small></button>`).join('')}</div>
        <div data-testid="sam2med-tool" style="font-size:12px;color:#9cf"></div>
        <div data-testid="sam2med-prompts" style="font-size:12px;white-space:pre-wrap;color:#aaa">no prompts</div>
        <div style="margin:8px 0">
          <button data-testid="sam2med-run" style="${BUTTON};font-weight:600">Run</button>
          <button data-testid="sam2med-undo" title="undo a prompt or a Run (ctrl-z)" style="${BUTTON}">Undo</button>
          <button data-testid="sam2med-redo" title="redo (ctrl-shift-z)" style="${BUTTON}">Redo</button>
          <button data-testid="sam2med-clear" title="remove every prompt (undoable)" style="${BUTTON}">Clear prompts</button>
          <label title="Run at once on each finished prompt"><input type="checkbox" data-testid="sam2med-live"> live</label>
          <label title="a correction re-propagates only the slices between the seeds around it; the rest stays as it is"><input type="checkbox" data-testid="sam2med-refine"> refine</label>
        </div>
        <div style="border-top:1px solid #444;padding-top:6px">
          Save what is shown as <select data-testid="sam2med-format" style="color:#000">
            <option value="seg">${FORMAT_NAMES.seg}</option><option value="rtstruct">${FORMAT_NAMES.rtstruct}</option></select>
          named <input data-testid="sam2med-save-name" size="22" maxlength="64" style="color:#000">
          <button data-testid="sam2med-save" style="${BUTTON}">Save</button>
        </div>
        <div data-testid="sam2med-status" style="min-height:1.5em"></div>
        <div data-testid="sam2med-error" style="color:#f77;min-height:1.5em"></div>
        <div data-testid="sam2med-report" style="font-size:12px;white-space:pre-wrap"></div>
      </div>`;
    const q = (id) => element.querySelector(`[data-testid="sam2med-${id}"]`);
    this.view = { q, segmentsShown: '' };
    q('start').value = this.state.start;
    q('end').value = this.state.end;
    q('axis').value = this.state.axis;
    q('auto').checked = this.state.auto;
    q('overlap').value = this.state.overlap;
    q('format').value = this.state.format;
    q('save-name').value = this.state.saveName;
    q('auto').onchange = () => { this.state.auto = q('auto').checked; this.updateControls(); };
    q('start').oninput = () => { this.state.start = q('start').value; };
    q('end').oninput = () => { this.state.end = q('end').value; };
    q('axis').onchange = () => { this.state.axis = q('axis').value; this.refreshCurrent(); };
    q('window').onchange = () => { this.state.window = q('window').value; };
    q('overlap').onchange = () => { this.state.overlap = q('overlap').value; };
    q('format').onchange = () => { this.state.format = q('format').value; };
    q('save-name').oninput = () => { this.state.saveName = q('save-name').value; };
    q('set-start').onclick = () => this.setFromViewer('start');
    q('set-end').onclick = () => this.setFromViewer('end');
    q('run').onclick = () => this.run();
    q('undo').onclick = () => this.undo();
    q('redo').onclick = () => this.redo();
    q('clear').onclick = () => this.clearPrompts();
    q('live').checked = this.live;
    q('live').onchange = () => { this.live = q('live').checked; };
    q('refine').checked = this.refine;
    q('refine').onchange = () => { this.refine = q('refine').checked; };
    for (const id of Object.keys(TOOLS)) q(`tool-${id}`).onclick = () => this.setTool(this.tool === id ? null : id);
    q('save').onclick = () => this.save();
    this.updateControls();
    this.loadWindows();
    this.refreshCurrent();
    this.timer = setInterval(() => this.refreshCurrent(), 1000);
    if (this.lastReport) q('report').textContent = this.lastReport;
    this.enterMode();
    this.showPrompts();
  }

  unmount() {
    clearInterval(this.timer);
    this.view = null;  // the prompt tools, keys and overlays stay while the mode is open (the Brush panel is another tab)
  }

  /** Controls are usable only once the image is there and while nothing runs. */
  updateControls() {
    if (!this.view) return;
    const { q } = this.view;
    const off = !this.ready || this.state.busy;
    for (const id of ['run', 'save', 'set-start', 'set-end', 'axis', 'overlap', 'format', 'save-name', 'auto', 'clear']) q(id).disabled = off;
    this.showTools();
    q('start').disabled = q('end').disabled = off || this.state.auto;
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
    if (!this.ready) return;
    try {
      const slice = await this.currentSlice();
      this.state[which] = String(slice.n.numbered ? slice.ohif : slice.server);
      if (this.view) this.view.q(which).value = this.state[which];
      this.refreshCurrent();
    } catch (err) {
      this.showError(err);
    }
  }

  async refreshCurrent() {
    if (!this.view) return;
    try {
      const s = await this.currentSlice();
      const where = s.n.numbered ? `image ${s.ohif}/${s.total} (${positionText(s.plane)})`
        : `${this.state.axis} slice ${s.server} of 0-${s.count - 1} (server numbering: OHIF's images do not step along ${this.state.axis})`;
      this.view.q('current').textContent = `current: ${where}`;
      this.view.q('range').textContent = this.rangeText(s.n);
      this.showSegments(s.n);
      if (!this.ready) { this.ready = true; this.updateControls(); }
      this.warmUp(s);
    } catch (err) {
      this.view.q('current').textContent = 'loading the image…';
      if (this.ready) { this.ready = false; this.updateControls(); }
    }
  }

  /** Ask the server to encode the shown series' slices, nearest the shown one first (once per series; 404: no warm-up there). */
  warmUp(s) {
    const { displaySet } = this.activeViewport();
    const series = displaySet.SeriesInstanceUID;
    if (this.warmed.has(series)) return;
    this.warmed.add(series);
    fetch(`${this.serverUrl}/sam2med/warmup`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ image: series, axis: this.state.axis, center: s.server }) })
      .then((r) => { this.warmupStatus = r.status; })
      .catch(() => { this.warmupStatus = 0; });  // best effort: the first Run encodes what is missing
  }

  rangeText(n) {
    if (this.state.auto) return '';
    try {
      const range = this.rangeParam(n);
      if (!range) return 'no range: every slice';
      return `range: ${this.describeSlice(n, Math.min(...range))} to ${this.describeSlice(n, Math.max(...range))}`;
    } catch (err) {
      return String(err.message || err);
    }
  }

  /** The segments with a lock toggle each (OHIF's own segment lock: the Brush cannot paint over it either). */
  showSegments() {
    let list = [];
    try {
      const { viewportId } = this.activeViewport();
      const seg = this.services.segmentationService.getActiveSegmentation?.(viewportId) || this.services.segmentationService.getSegmentations()[0];
      if (seg) list = this.segmentsOf(seg, viewportId).map((s) => ({ ...s, segmentationId: seg.segmentationId }));
    } catch (err) { /* no segmentation yet */ }
    const shown = JSON.stringify(list);
    if (shown === this.view.segmentsShown) return;
    this.view.segmentsShown = shown;
    const box = this.view.q('segments');
    box.innerHTML = list.length ? '' : 'none yet: add a segmentation in the Segmentation panel';
    for (const s of list) {
      const row = document.createElement('label');
      row.style.display = 'block';
      row.dataset.testid = `sam2med-segment-${s.value}`;
      row.innerHTML = `<input type="checkbox" data-testid="sam2med-lock-${s.value}"> <span style="display:inline-block;width:10px;height:10px;background:rgb(${s.color.join(',')})"></span> `;
      row.append(document.createTextNode(`${s.name} (${s.value})`));
      const lock = row.querySelector('input');
      lock.checked = s.locked;
      lock.title = 'lock: this segment is kept exactly and never overwritten';
      lock.onchange = () => {
        this.services.segmentationService.setSegmentLocked(s.segmentationId, s.value, lock.checked);
        this.refreshCurrent();
      };
      box.append(row);
    }
  }

  setBusy(busy, text = '') {
    this.state.busy = busy;
    if (!this.view) return;
    this.updateControls();
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

  showReport(n, report, seconds, seedSlices, promptCount = 0) {
    const cache = report.cache || {};
    const [lo, hi] = report.slice_range;
    const count = hi - lo + 1;
    const perSlice = seconds / Math.max(1, count);
    const lines = [`done in ${seconds.toFixed(1)} s for ${count} slices: ${perSlice.toFixed(2)} s per slice` +
      (this.lastPerSlice ? ` (previous run: ${this.lastPerSlice.toFixed(2)} s per slice)` : '') +
      ` (server: encode ${report.encode_seconds} s, track ${report.track_seconds} s)`,
      `from ${this.describeSlice(n, lo)} to ${this.describeSlice(n, hi)}, ${seedSlices} drawn or corrected image(s) and ${promptCount} prompt(s) sent`,
      `feature cache: ${cache.request_hit_slices ?? 0} slices reused, ${cache.request_miss_slices ?? 0} encoded`];
    if (report.refine) {  // a refined correction: what was propagated again, what was left as it was
      const bands = Object.entries(report.refine.bands).map(([v, [a, b]]) => `${this.nameOf(v)} from ${this.describeSlice(n, a)} to ${this.describeSlice(n, b)}`);
      const kept = report.refine.unchanged_labels.map((v) => this.nameOf(v));
      lines.push(`refined: ${bands.join('; ')} propagated again${kept.length ? `; ${kept.join(', ')} left as it was` : ''}`);
    }
    for (const [value, label] of Object.entries(report.labels || {})) {
      const low = label.slices.filter((s) => (s.predicted_iou ?? s.iou ?? 1) < LOW_CONFIDENCE && !s.seed).map((s) => s.slice);
      const kept = (report.kept_slices || {})[label.name] || (report.kept_slices || {})[value] || [];
      lines.push(`${this.nameOf(value)}: ${label.voxels} voxels, mean score ${label.mean_object_score}` +
        (kept.length ? `; kept as drawn on ${this.describeSlices(n, kept)}` : '') +
        (low.length ? `; check ${this.describeSlices(n, low)} (low confidence)` : '; no low-confidence slice'));
      for (const [direction, stop] of Object.entries(label.auto_range || {})) {
        const last = stop.last_present === null || stop.last_present === undefined ? '–' : this.describeSlice(n, stop.last_present);
        lines.push(`  auto range ${direction}: ${stop.reason.replace('_', ' ')}, last slice ${last}`);
      }
    }
    for (const name of Object.keys(report.locked_labels || {})) lines.push(`'${name}': locked, kept exactly`);
    this.lastPerSlice = perSlice;
    this.lastResult = report;
    this.lastReport = lines.join('\n');
    if (this.view) {
      this.view.q('report').textContent = this.lastReport;
      this.view.q('status').textContent = 'result painted into the segmentation (not stored: Save stores it)';
    }
  }
}

/** "z -784.5 mm": the patient coordinate an image's normal runs along, and its value there. */
function positionText(plane) {
  const n = plane.normal.map(Math.abs);
  const c = n.indexOf(Math.max(...n));
  return `${'xyz'[c]} ${plane.position[c].toFixed(1)} mm`;
}

function dotAbs(a, b) {
  const la = Math.hypot(...a) || 1;
  const lb = Math.hypot(...b) || 1;
  return (a[0] * b[0] + a[1] * b[1] + a[2] * b[2]) / (la * lb);
}

/** The SVG of one prompt at canvas points: clicks as dots (a cross when negative), boxes, scribbles as lines, lassos as closed shapes. */
function shape(kind, positive, canvas, color, tag, id) {
  const rgb = `rgb(${(color || [255, 255, 0]).join(',')})`;
  const dash = positive ? '' : ' stroke-dasharray="5,3"';
  const attrs = `data-prompt="${tag}" data-prompt-id="${id}" stroke="${rgb}" stroke-width="2"${dash}`;
  const xy = (p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`;
  if (kind === 'click') {
    const [x, y] = canvas[0];
    const cross = positive ? '' : `<path d="M${x - 4},${y - 4}L${x + 4},${y + 4}M${x - 4},${y + 4}L${x + 4},${y - 4}" stroke="${rgb}" stroke-width="2"/>`;
    return `<g ${attrs}><circle cx="${x}" cy="${y}" r="5" fill="${positive ? rgb : 'none'}"/>${cross}</g>`;
  }
  if (kind === 'box') {
    if (canvas.length < 2) return '';
    const [a, b] = canvas;
    return `<rect ${attrs} fill="none" x="${Math.min(a[0], b[0])}" y="${Math.min(a[1], b[1])}" width="${Math.abs(a[0] - b[0])}" height="${Math.abs(a[1] - b[1])}"/>`;
  }
  if (kind === 'lasso') return `<polygon ${attrs} fill="${rgb}" fill-opacity="0.15" points="${canvas.map(xy).join(' ')}"/>`;
  return `<polyline ${attrs} fill="none" points="${canvas.map(xy).join(' ')}"/>`;
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
