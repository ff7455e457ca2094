import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// The build goes into the Python package, which serves index.html at / and the bundle
// under /assets/. A relative base keeps the page working under any URL prefix.
export default defineConfig({
  base: './',
  plugins: [svelte()],
  build: {
    outDir: '../src/t3vis/server/static',
    emptyOutDir: true,
    assetsDir: 'assets',
    chunkSizeWarningLimit: 2000,
    sourcemap: false,
  },
  server: {
    // `npm run dev` talks to a `t3vis serve` on the default port.
    proxy: { '/api': 'http://127.0.0.1:8737' },
  },
});
