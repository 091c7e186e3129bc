// sam2med OHIF mode: OHIF's own Segmentation mode (Brush, Eraser, Threshold, segmentation panel, SEG viewing)
// with the sam2med propagation panel added on the right. Loaded at run time from app-config.js.
const MODE_ID = 'sam2med';
const SAM2MED_PANEL = 'sam2med.panelModule.sam2med';
// OHIF imports every key of a mode's extensions by name: ours is named by its URL.
const EXTENSION_URL = new URL('./sam2med-extension.js', import.meta.url).pathname;

const mode = {
  id: MODE_ID,
  extensionDependencies: {
    '@ohif/extension-default': '^3.0.0',
    '@ohif/extension-cornerstone': '^3.0.0',
    '@ohif/extension-cornerstone-dicom-seg': '^3.0.0',
    [EXTENSION_URL]: '^1.0.0',
  },
  async modeFactory({ modeConfiguration, loadModules }) {
    const [segmentationMode] = await loadModules(['@ohif/mode-segmentation']);
    const base = segmentationMode.modeFactory({ modeConfiguration });
    const routes = base.routes.map((route) => ({
      ...route,
      layoutTemplate: (args) => {
        const layout = route.layoutTemplate(args);
        return { ...layout, props: { ...layout.props, rightPanels: [SAM2MED_PANEL, ...layout.props.rightPanels] } };
      },
    }));
    return {
      ...base,
      id: MODE_ID,
      routeName: 'sam2med',
      displayName: 'SAM2 propagation',
      routes,
      // the prompt tools' keys, mouse and overlays live while this mode is open
      onModeEnter: (args) => { base.onModeEnter?.(args); window.sam2med?.enterMode(); },
      onModeExit: (args) => { window.sam2med?.exitMode(); base.onModeExit?.(args); },
      extensions: { ...base.extensions, [EXTENSION_URL]: '^1.0.0' },
    };
  },
};

export default mode;
