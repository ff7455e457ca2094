import { mount } from 'svelte';
import App from './App.svelte';
import DecodeWorker from './lib/decode.worker?worker';
import { useDecodeWorker } from './lib/offthread';
import './app.css';

// Arrow answers of a big run are decoded off the main thread (lib/offthread.ts).
useDecodeWorker(() => new DecodeWorker());

const target = document.getElementById('app')!;
target.textContent = '';
mount(App, { target });
