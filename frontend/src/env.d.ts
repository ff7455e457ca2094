// Vite's `?inline` imports: a stylesheet's text, for the widget's shadow root (widget.ts).
declare module '*.css?inline' {
  const text: string;
  export default text;
}
