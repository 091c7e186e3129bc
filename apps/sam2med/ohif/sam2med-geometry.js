// sam2med geometry for OHIF: NRRD in/out and the mapping between OHIF's images and the server's voxel grid.
// Slices are matched by patient position, never by list order: OHIF's stack lists images by InstanceNumber,
// which can run against the slice normal, while the server's grid follows the normal.

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const norm = (a) => Math.sqrt(dot(a, a));

/** A voxel grid as the server describes it: shape (x, y, z), spacing, origin, direction (row-major 3x3). */
export class Grid {
  constructor({ shape, spacing, origin, direction }) {
    this.shape = shape.map(Number);
    this.spacing = spacing.map(Number);
    this.origin = origin.map(Number);
    this.direction = direction.map(Number);
    // axes[c]: the patient-space step of one voxel along index axis c (column c of direction, times spacing)
    this.axes = [0, 1, 2].map((c) => scale([this.direction[c], this.direction[3 + c], this.direction[6 + c]], this.spacing[c]));
  }

  /** Continuous voxel index (x, y, z) of a patient-space point (direction is orthonormal). */
  toIndex(point) {
    const d = sub(point, this.origin);
    return this.axes.map((step, c) => dot(d, step) / (this.spacing[c] * this.spacing[c]));
  }

  get size() {
    return this.shape[0] * this.shape[1] * this.shape[2];
  }
}

/** The patient-space plane of one OHIF image, from cornerstone's imagePlaneModule. */
export function planeOf(plane) {
  const row = plane.rowCosines.map(Number);
  const col = plane.columnCosines.map(Number);
  return {
    position: plane.imagePositionPatient.map(Number),
    row, col, normal: cross(row, col),
    columns: Number(plane.columns), rows: Number(plane.rows),
    dx: Number(plane.columnPixelSpacing || plane.pixelSpacing?.[1] || 1),  // along `row`
    dy: Number(plane.rowPixelSpacing || plane.pixelSpacing?.[0] || 1),     // along `col`
  };
}

/**
 * How the pixels of an image land on a grid: base voxel index of pixel (0, 0) and the index steps for one
 * column (di) and one row (dj). Throws when the image is not on the grid's lattice.
 */
export function pixelMapping(plane, grid) {
  const base = grid.toIndex(plane.position);
  const di = grid.toIndex(plane.position.map((p, k) => p + plane.row[k] * plane.dx)).map((v, k) => v - base[k]);
  const dj = grid.toIndex(plane.position.map((p, k) => p + plane.col[k] * plane.dy)).map((v, k) => v - base[k]);
  const offLattice = (v) => Math.abs(v - Math.round(v)) > 0.02;
  if ([...base, ...di, ...dj].some(offLattice)) {
    throw new Error('this image is not on the voxel lattice of the server image (different series or reformatted)');
  }
  return { base: base.map(Math.round), di: di.map(Math.round), dj: dj.map(Math.round) };
}

/**
 * Call visit(pixel, voxel, xyz) for every pixel of an image that lands on the grid: `pixel` indexes the image
 * (row-major), `voxel` the grid's data (x fastest), `xyz` the voxel's index (one array, reused: no allocation
 * per pixel on this hot path).
 */
export function forEachVoxel(mapping, plane, grid, visit) {
  const { base, di, dj } = mapping;
  const [nx, ny, nz] = grid.shape;
  const xyz = [0, 0, 0];
  for (let j = 0; j < plane.rows; j++) {
    for (let i = 0; i < plane.columns; i++) {
      xyz[0] = base[0] + i * di[0] + j * dj[0];
      xyz[1] = base[1] + i * di[1] + j * dj[1];
      xyz[2] = base[2] + i * di[2] + j * dj[2];
      if (xyz[0] < 0 || xyz[0] >= nx || xyz[1] < 0 || xyz[1] >= ny || xyz[2] < 0 || xyz[2] >= nz) continue;
      visit(j * plane.columns + i, xyz[0] + nx * (xyz[1] + ny * xyz[2]), xyz);
    }
  }
}

/** The slice index along `axis` (0 x, 1 y, 2 z) of a patient-space point, rounded. */
export function sliceOf(grid, point, axis) {
  return Math.round(grid.toIndex(point)[axis]);
}

/** The grid spanned by a stack of parallel images sorted along their normal (the seed's own geometry). */
export function gridOfPlanes(planes) {
  const first = planes[0];
  const along = (p) => dot(p.position, first.normal);
  const sorted = [...planes].sort((a, b) => along(a) - along(b));
  const span = sub(sorted[sorted.length - 1].position, sorted[0].position);
  const dz = sorted.length > 1 ? norm(span) / (sorted.length - 1) : 1;
  const zdir = sorted.length > 1 ? scale(span, 1 / norm(span)) : first.normal;
  const direction = [first.row[0], first.col[0], zdir[0], first.row[1], first.col[1], zdir[1], first.row[2], first.col[2], zdir[2]];
  const grid = new Grid({ shape: [first.columns, first.rows, sorted.length], spacing: [first.dx, first.dy, dz],
    origin: sorted[0].position, direction });
  return { grid, sorted };
}

async function gzip(bytes, mode) {
  const stream = new Blob([bytes]).stream().pipeThrough(mode === 'compress' ? new CompressionStream('gzip') : new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A gzip-compressed NRRD (uint8, x fastest) of `data` on `grid`, in LPS patient space as DICOM uses. */
export async function encodeNrrd(data, grid) {
  const vec = (v) => `(${v.map((x) => x.toPrecision(12)).join(',')})`;
  const header = ['NRRD0004', 'type: uint8', 'dimension: 3', 'space: left-posterior-superior',
    `sizes: ${grid.shape.join(' ')}`, `space directions: ${grid.axes.map(vec).join(' ')}`,
    'kinds: domain domain domain', 'endian: little', 'encoding: gzip', `space origin: ${vec(grid.origin)}`, '', ''].join('\n');
  const body = await gzip(data, 'compress');
  const out = new Uint8Array(header.length + body.length);
  out.set(new TextEncoder().encode(header), 0);
  out.set(body, header.length);
  return out;
}

const NRRD_TYPES = {
  'uint8': Uint8Array, 'uchar': Uint8Array, 'unsigned char': Uint8Array, 'uint16': Uint16Array, 'ushort': Uint16Array,
  'unsigned short': Uint16Array, 'int16': Int16Array, 'short': Int16Array, 'uint32': Uint32Array, 'uint': Uint32Array,
  'unsigned int': Uint32Array, 'int32': Int32Array, 'int': Int32Array,
};

/** Parse a NRRD file (raw or gzip, little endian) into { grid, data } with voxels x fastest. */
export async function decodeNrrd(buffer) {
  const bytes = new Uint8Array(buffer);
  let end = -1;
  for (let i = 0; i < Math.min(bytes.length - 1, 65536); i++) {
    if (bytes[i] === 10 && bytes[i + 1] === 10) { end = i; break; }
  }
  if (end < 0) throw new Error('the server answered with a result that is not a NRRD file');
  const fields = {};
  for (const line of new TextDecoder().decode(bytes.subarray(0, end)).split('\n').slice(1)) {
    const at = line.indexOf(':');
    if (at > 0 && !line.startsWith('#')) fields[line.slice(0, at).trim()] = line.slice(at + 1).replace(/^=/, '').trim();
  }
  const vectors = (text) => [...text.matchAll(/\(([^)]*)\)/g)].map((m) => m[1].split(',').map(Number));
  const sizes = fields.sizes.split(/\s+/).map(Number);
  const axes = vectors(fields['space directions']);
  const spacing = axes.map(norm);
  const direction = [0, 1, 2].flatMap((r) => [0, 1, 2].map((c) => axes[c][r] / spacing[c]));
  const grid = new Grid({ shape: sizes, spacing, origin: vectors(fields['space origin'])[0], direction });
  const Type = NRRD_TYPES[fields.type];
  if (!Type || sizes.length !== 3) throw new Error(`unsupported result NRRD (type ${fields.type}, ${sizes.length} dimensions)`);
  let body = bytes.subarray(end + 2);
  if (fields.encoding === 'gzip' || fields.encoding === 'gz') body = await gzip(body, 'decompress');
  else if (fields.encoding !== 'raw') throw new Error(`unsupported NRRD encoding ${fields.encoding}`);
  if (body.byteLength < grid.size * Type.BYTES_PER_ELEMENT) throw new Error('the result NRRD is truncated');
  const data = new Type(body.slice(0, grid.size * Type.BYTES_PER_ELEMENT).buffer);
  return { grid, data };
}

// -- prompts (clicks, boxes, scribbles, lassos) ---------------------------------------------------

/**
 * The grid axis (0 x, 1 y, 2 z) a viewing direction runs along, or -1 when the view is oblique to the grid:
 * a prompt drawn on such a view lies on one server slice of that axis.
 */
export function alignedAxis(grid, normal) {
  const length = norm(normal) || 1;
  for (let c = 0; c < 3; c++) {
    if (Math.abs(dot(grid.axes[c], normal)) / (grid.spacing[c] * length) > 0.99) return c;
  }
  return -1;
}

/**
 * The server voxel indices (x, y, z, continuous) of a prompt's patient-space points, all on server slice
 * `slice` along `axis` (the drawing plane is a slice of the grid: the along-axis index is that slice exactly).
 */
export function promptVoxels(grid, world, axis, slice) {
  return world.map((point) => {
    const index = grid.toIndex(point);
    index[axis] = slice;
    return index.map((v) => Math.round(v * 1000) / 1000);
  });
}

/** Signed distance (mm) of a patient-space point from the plane through `origin` with normal `normal`. */
export function planeDistance(point, origin, normal) {
  return dot(sub(point, origin), normal) / (norm(normal) || 1);
}

/** Run-length copy of a labelmap image: [start, length, value, ...] over its non-zero pixels. */
export function runsOf(pixels) {
  const runs = [];
  let i = 0;
  while (i < pixels.length) {
    if (!pixels[i]) { i++; continue; }
    const v = pixels[i];
    const start = i;
    while (i < pixels.length && pixels[i] === v) i++;
    runs.push(start, i - start, v);
  }
  return Int32Array.from(runs);
}

/** Write runs (from runsOf) back into `pixels`, every other pixel 0. Returns whether anything changed. */
export function restoreRuns(pixels, runs) {
  const before = runsOf(pixels);
  let same = before.length === runs.length;
  for (let i = 0; same && i < runs.length; i++) same = before[i] === runs[i];
  if (same) return false;
  pixels.fill(0);
  for (let r = 0; r < runs.length; r += 3) pixels.fill(runs[r + 2], runs[r], runs[r] + runs[r + 1]);
  return true;
}
