// Vite's `?inline` imports: a stylesheet's text, for the widget's shadow root (widget.ts).
declare module '*.css?inline' {
  const text: string;
  export default text;
}

// Vite's `?worker` imports: a constructor of the module as a Web Worker (a file next to the
// bundle; with `&inline`, inlined into it, for the widget's single module).
declare module '*?worker' {
  const WorkerConstructor: { new (): Worker };
  export default WorkerConstructor;
}
declare module '*?worker&inline' {
  const WorkerConstructor: { new (): Worker };
  export default WorkerConstructor;
}

// regl-scatterplot's KDBush (v4), the class its spatial index is made of (lib/decode.ts).
declare module 'regl-scatterplot/src/kdbush-class.js' {
  interface KDBushIndex {
    data: ArrayBuffer;
    add(x: number, y: number): number;
    finish(): KDBushIndex;
  }
  const makeKDBush: () => new (numItems: number, nodeSize?: number) => KDBushIndex;
  export default makeKDBush;
}
