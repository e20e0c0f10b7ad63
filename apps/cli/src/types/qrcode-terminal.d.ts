/** The part of qrcode-terminal (a CommonJS module without types) that `parley link` uses. */
declare module 'qrcode-terminal' {
  const qrcode: {
    generate(text: string, opts: { small?: boolean }, done: (qr: string) => void): void;
  };
  export default qrcode;
}
