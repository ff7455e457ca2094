import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// The notebook widget (src/widget.ts) as one ES module that anywidget loads: styles are injected by
// the components into the widget's shadow root (no CSS file), and nothing is split into chunks.
// Built after the page (vite.config.ts empties the static folder), into static/widget/.
export default defineConfig({
  plugins: [svelte({ compilerOptions: { css: 'injected' }, emitCss: false })],
  define: { 'process.env.NODE_ENV': JSON.stringify('production') },
  build: {
    outDir: '../src/t3vis/server/static/widget',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 3000,
    lib: { entry: 'src/widget.ts', formats: ['es'], fileName: () => 'widget.js' },
    rollupOptions: { output: { inlineDynamicImports: true } },
  },
});
