// Loaded before Bootstrap Italia's bundle: its bundled video.js would otherwise inject
// <style> elements (and an icon font as a data: URI) that the app's CSP rightly blocks.
window.VIDEOJS_NO_DYNAMIC_STYLE = true;
